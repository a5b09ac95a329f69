//! In-flight shares: a bounded count of requests one tenant or one client
//! key has open (`limits.max_in_flight_per_tenant`, `_per_client`). The
//! counts live with the tenant (`routes`) and the client (`client_auth`);
//! `admit::Shares` takes the slots and `body::InFlight` holds them until
//! the response body is done. Types only, so every layer can hold them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A bounded count of requests in flight (one tenant's, one client's).
#[derive(Clone, Debug)]
pub struct Share(Arc<ShareInner>);

#[derive(Debug)]
struct ShareInner {
    used: AtomicUsize,
    max: usize,
}

/// One slot of a [`Share`], given back when dropped.
#[derive(Debug)]
pub struct Slot(Share);

impl Share {
    pub fn new(max: usize) -> Share {
        Share(Arc::new(ShareInner { used: AtomicUsize::new(0), max }))
    }

    pub fn take(&self) -> Option<Slot> {
        let prev = self.0.used.fetch_add(1, Ordering::AcqRel);
        if prev >= self.0.max {
            self.0.used.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }

    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The slots a request holds; travels in the response's extensions to
/// `observe`, which keeps them until the body is done. (Shared only because
/// extensions must be `Clone`; nothing clones it.)
#[derive(Clone, Debug)]
pub struct Slots {
    _held: Arc<(Option<Slot>, Option<Slot>)>,
}

impl Slots {
    pub fn new(tenant: Option<Slot>, client: Option<Slot>) -> Slots {
        Slots { _held: Arc::new((tenant, client)) }
    }
}

/// Requests being handled by the whole gateway, bodies included: what
/// `admit` compares with `max_in_flight`. The gauge
/// `pleo_gateway_in_flight_requests` reports it at scrape time.
#[derive(Clone, Debug, Default)]
pub struct InFlightCount(Arc<AtomicUsize>);

/// One request counted in an [`InFlightCount`] until dropped.
#[derive(Debug)]
pub struct Entered(InFlightCount);

impl InFlightCount {
    pub fn enter(&self) -> Entered {
        self.0.fetch_add(1, Ordering::AcqRel);
        Entered(self.clone())
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_gives_out_at_most_max_slots_and_takes_them_back() {
        let share = Share::new(2);
        let a = share.take().unwrap();
        let _b = share.take().unwrap();
        assert!(share.take().is_none());
        assert_eq!(share.used(), 2);
        drop(a);
        assert!(share.take().is_some());
    }
}
