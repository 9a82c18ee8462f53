# kubexec's session processes in this container, one "pid command line" each: the marker in
# their environment, or the wrapper, orted or the example program in their command line (the
# patterns never match grep's own command line). Used by devcluster/reattachkit.py.
for d in /proc/[0-9]*; do
    [ "${d#/proc/}" = "$$" ] && continue
    c=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    [ -n "$c" ] || continue
    if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -q '^KUBEXEC_SESSIO[N]=' ||
        printf %s "$c" | grep -q -e 'kub[e]xec' -e 'orte[d]' -e '/opt/app/bi[n]'; then
        echo "${d#/proc/} $c"
    fi
done
