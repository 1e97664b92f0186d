//! Test helpers of the proxy tests (owned by whoever writes them).
