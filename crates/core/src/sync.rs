//! The one poison-tolerant lock the IO crates share.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning. For state whose every critical section
/// leaves it consistent: a panic in one task (already reported) must not take
/// down the proxy, the front or the recorder with a second panic on the next
/// lock.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_locks() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _guard = m.lock().unwrap();
            panic!("poison it");
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
