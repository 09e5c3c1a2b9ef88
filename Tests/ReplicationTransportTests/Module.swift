// Tests for the module; see docs/architecture.md.
