//go:build tools

// Package tools pins the commands this module builds, so go.sum covers them.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
