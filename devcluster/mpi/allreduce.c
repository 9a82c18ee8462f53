/*
 * allreduce.c - the e2e tier's MPI smoke test.
 *
 * Every rank contributes (rank + 1) to an MPI_Allreduce(MPI_SUM) over
 * MPI_COMM_WORLD and prints exactly one line:
 *
 *     rank=R size=S sum=X host=HOSTNAME
 *
 * It exits 0 when sum == size * (size + 1) / 2, and 1 otherwise (or when an
 * MPI call fails). Built against each launcher flavour by install.sh.
 */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    int rank = -1;
    int size = 0;
    long long mine = 0;
    long long sum = 0;
    long long expected = 0;
    char host[MPI_MAX_PROCESSOR_NAME + 1];
    int host_len = 0;
    int ok = 0;

    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "allreduce: MPI_Init failed\n");
        return 1;
    }
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS
        || MPI_Comm_size(MPI_COMM_WORLD, &size) != MPI_SUCCESS
        || MPI_Get_processor_name(host, &host_len) != MPI_SUCCESS) {
        fprintf(stderr, "allreduce: MPI_Comm_rank/size or MPI_Get_processor_name failed\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
        return 1;
    }
    host[host_len < 0 ? 0 : host_len] = '\0';

    mine = (long long)rank + 1;
    if (MPI_Allreduce(&mine, &sum, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) {
        fprintf(stderr, "allreduce: MPI_Allreduce failed on rank %d\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
        return 1;
    }
    expected = (long long)size * ((long long)size + 1) / 2;
    ok = (sum == expected);

    printf("rank=%d size=%d sum=%lld host=%s\n", rank, size, sum, host);
    fflush(stdout);
    if (!ok) {
        fprintf(stderr, "allreduce: rank %d got sum=%lld, expected %lld\n", rank, sum, expected);
    }

    MPI_Finalize();
    return ok ? 0 : 1;
}
