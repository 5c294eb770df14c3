//! The hub service: registry, datasets, artifacts, jobs and workers, tracking,
//! serving, UI. Talks to models only through the `engine` crate.
