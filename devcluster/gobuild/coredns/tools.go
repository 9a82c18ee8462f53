//go:build tools

// Package tools pins the commands this module builds, so go.sum covers them.
package tools

import _ "github.com/coredns/coredns"
