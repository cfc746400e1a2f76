//! The one firewall driver of a daemon, shared by the capture thread, the API and the
//! expiry scheduler behind one lock.

use std::sync::{Arc, Mutex, MutexGuard};

use super::FirewallDriver;

/// A driver behind a mutex. Cloning shares the same driver.
#[derive(Clone)]
pub struct Shared {
    driver: Arc<Mutex<Box<dyn FirewallDriver>>>,
    name: &'static str,
    kernel_expiry: bool,
}

impl Shared {
    /// Share `driver`.
    pub fn new(driver: Box<dyn FirewallDriver>) -> Shared {
        let (name, kernel_expiry) = (driver.name(), driver.kernel_expiry());
        Shared { driver: Arc::new(Mutex::new(driver)), name, kernel_expiry }
    }

    /// Lock the driver, surviving a panicked holder (the driver has no invariants that a
    /// panic mid-call could break beyond what the kernel already reports).
    pub fn lock(&self) -> MutexGuard<'_, Box<dyn FirewallDriver>> {
        self.driver.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The driver's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the firewall closes grants by itself.
    pub fn kernel_expiry(&self) -> bool {
        self.kernel_expiry
    }
}
