//! In-flight shares: a count of requests one tenant or one client key has
//! open (`limits.max_in_flight_per_tenant`, `_per_client`). The counts live
//! with the tenant (`routes`) and the client (`client_auth`);
//! `admit::Shares` takes the slots and `body::InFlight` holds them until
//! the response body is done. Types only, so every layer can hold them.
//!
//! A share is a guarantee, not a cap, while the gateway has room: a request
//! past its share may *borrow* a free slot as long as the whole gateway,
//! counting it, stays within `max_in_flight` less a reserve of a tenth
//! ([`may_borrow`]). The reserve is what keeps the others served: once
//! borrowers have filled the gateway to that mark, only requests within
//! their share get in, so as borrowed requests finish their slots go to
//! tenants under their share. The gateway does not queue, so "others
//! waiting" is exactly "the global limit is close". A tenant alone (the
//! mission's first use: one legacy app) may use the whole limit.

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

    /// A slot within the share, or, past it, a borrowed one when `borrow`
    /// allows ([`may_borrow`]); `None` when neither.
    pub fn take(&self, borrow: impl FnOnce() -> bool) -> Option<Slot> {
        let prev = self.0.used.fetch_add(1, Ordering::AcqRel);
        if prev >= self.0.max && !borrow() {
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

/// Whether a request past its share may borrow a free slot: only while
/// the gateway's requests (`in_flight`, counting this one) stay within
/// `max_in_flight` less its tenth, the reserve kept for requests within
/// their share. Under 10 slots there is no reserve.
pub fn may_borrow(in_flight: usize, max_in_flight: usize) -> bool {
    in_flight <= max_in_flight - max_in_flight / 10
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
    fn a_share_gives_out_max_slots_then_borrows_only_when_allowed() {
        let share = Share::new(2);
        let a = share.take(|| false).unwrap();
        let _b = share.take(|| panic!("within the share nothing is borrowed")).unwrap();
        assert!(share.take(|| false).is_none());
        assert_eq!(share.used(), 2, "a refused take gives its count back");
        let borrowed = share.take(|| true).unwrap();
        assert_eq!(share.used(), 3);
        drop(borrowed);
        drop(a);
        assert!(share.take(|| false).is_some());
    }

    #[test]
    fn borrowing_stops_a_tenth_short_of_the_limit() {
        // A tenant alone at max_in_flight 2 may use both slots.
        assert!(may_borrow(2, 2));
        assert!(!may_borrow(3, 2));
        // At 20, the last 2 slots are kept for requests within their share.
        assert!(may_borrow(18, 20));
        assert!(!may_borrow(19, 20));
        assert!(may_borrow(9000, 10_000) && !may_borrow(9001, 10_000));
    }
}
