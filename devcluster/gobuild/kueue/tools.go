//go:build tools

// Package tools pins the Kueue manager this module builds, so go.sum covers it.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
