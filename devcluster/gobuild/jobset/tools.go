//go:build tools

// Package tools pins the JobSet controller this module builds, so go.sum covers it.
package tools

import _ "sigs.k8s.io/jobset"
