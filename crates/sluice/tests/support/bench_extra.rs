//! Test helpers of the bench tests (owned by whoever writes them).
