// Package migrations holds mailstack's database schema as numbered SQL files.
//
// Files are named NNNN_description.sql and applied in order, each once, by
// store.Migrate. A file must never change once released; add a new one.
package migrations

import "embed"

// FS contains the migration files.
//
//go:embed *.sql
var FS embed.FS
