//! Single-threaded zygote and per-container monitors: see docs/architecture.md.
