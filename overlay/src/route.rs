//! The routing table and route cache, with VNET/P's match priorities exactly.
//!
//! A [`Route`] matches a frame by its source and destination MACs (each through a
//! [`MacMatch`] qualifier) and, optionally, by the endpoint the frame arrived on.
//! Among the routes that match, only those at the highest [`priority`] receive a copy:
//! that is how broadcast and multicast fan out. A frame is never sent back out of the
//! endpoint it arrived on. The exclusion is applied *after* the top priority is chosen:
//! when the only top-priority routes point back at the arrival endpoint, the frame is
//! dropped rather than handed to a lower-priority route, the way a learning switch
//! filters a frame whose destination sits behind its ingress port.
//!
//! [`RouteTable::lookup`] remembers its answers in a bounded cache keyed by the arrival
//! endpoint and the first 12 bytes of the frame (destination and source MAC). A hit
//! neither allocates nor scans the table; any change to the routes flushes the cache,
//! and the engine calls [`RouteTable::flush_cache`] when links or interfaces change.

use std::fmt;

use pkt::wire::MacAddr;

use crate::types::{Endpoint, MacMatch};

/// VNET/P's priority table, indexed by `[src qualifier][dst qualifier]` with the
/// qualifiers ordered not, any, direct (a literal MAC). Higher wins.
const PRIORITY: [[u8; 3]; 3] = [
    // dst: not, any, direct
    [3, 5, 7], // src not
    [5, 6, 6], // src any
    [7, 8, 8], // src direct
];

/// The row/column of a qualifier in [`PRIORITY`]; `none` has none.
fn qualifier_index(m: &MacMatch) -> Option<usize> {
    match m {
        MacMatch::Not(_) => Some(0),
        MacMatch::Any => Some(1),
        MacMatch::Exact(_) => Some(2),
        MacMatch::None => None,
    }
}

/// The priority of a route whose source and destination qualifiers both matched
/// a frame, per VNET/P's table; `None` when either side is `none` (never matches).
///
/// | src \ dst | not | any | direct |
/// |-----------|-----|-----|--------|
/// | not       | 3   | 5   | 7      |
/// | any       | 5   | 6   | 6      |
/// | direct    | 7   | 8   | 8      |
pub fn priority(src: &MacMatch, dst: &MacMatch) -> Option<u8> {
    let row = qualifier_index(src)?;
    let col = qualifier_index(dst)?;
    Some(PRIORITY[row][col])
}

/// True when `mac` satisfies the qualifier.
fn mac_matches(m: &MacMatch, mac: MacAddr) -> bool {
    match m {
        MacMatch::Any => true,
        MacMatch::None => false,
        MacMatch::Not(x) => *x != mac,
        MacMatch::Exact(x) => *x == mac,
    }
}

/// One route: frames whose MACs match `src` and `dst`, arriving on `from` (or
/// anywhere when `from` is `None`), are sent to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Qualifier for the frame's source MAC.
    pub src: MacMatch,
    /// Qualifier for the frame's destination MAC.
    pub dst: MacMatch,
    /// Where matching frames go.
    pub to: Endpoint,
    /// The arrival endpoint this route is limited to; `None` matches any.
    pub from: Option<Endpoint>,
}

impl Route {
    /// The priority at which this route matches a frame with these MACs that
    /// arrived on `arrival`, or `None` when it does not match.
    pub fn matches(&self, arrival: Endpoint, dst_mac: MacAddr, src_mac: MacAddr) -> Option<u8> {
        if self.from.is_some_and(|from| from != arrival) {
            return None;
        }
        if !mac_matches(&self.src, src_mac) || !mac_matches(&self.dst, dst_mac) {
            return None;
        }
        priority(&self.src, &self.dst)
    }
}

/// Formats an endpoint by slot, for messages (`link#3`, `interface#0`).
struct Slot(Endpoint);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Endpoint::Interface(i) => write!(f, "interface#{i}"),
            Endpoint::Link(i) => write!(f, "link#{i}"),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={} dst={} to={}", self.src, self.dst, Slot(self.to))?;
        match self.from {
            Some(from) => write!(f, " from={}", Slot(from)),
            None => f.write_str(" from=any"),
        }
    }
}

/// Why a routing table change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The table already holds an identical route.
    #[error("route already exists: {0}")]
    Duplicate(Route),
    /// The route to remove is not in the table.
    #[error("no such route: {0}")]
    NotFound(Route),
}

/// Destinations stored inline in a cache entry; larger results go to the arena.
const INLINE_DESTS: usize = 8;
/// Ways per cache set.
const CACHE_WAYS: usize = 4;
/// Cache sets (a power of two; the index is the top bits of the key's hash).
const CACHE_SETS: usize = 256;
/// Bits of the hash that select a set.
const CACHE_SET_BITS: u32 = CACHE_SETS.trailing_zeros();
/// Most endpoints held out of line, over all cached results with more than
/// [`INLINE_DESTS`] destinations. Distinct large results are stored once and shared.
const ARENA_MAX: usize = 16 * 1024;

/// What a cache entry is looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    arrival: Endpoint,
    /// Destination MAC then source MAC, as on the wire.
    macs: [u8; 12],
}

impl CacheKey {
    /// The set this key lives in: a multiplicative hash of the key, top bits.
    fn set(&self) -> usize {
        let m = self.macs;
        let a = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]);
        let ep = match self.arrival {
            Endpoint::Interface(i) => u64::from(i),
            Endpoint::Link(i) => 0x1_0000 | u64::from(i),
        };
        let b = u64::from(u32::from_le_bytes([m[8], m[9], m[10], m[11]])) | (ep << 32);
        let h = (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b).wrapping_mul(0xff51_afd7_ed55_8ccd);
        // The shift leaves CACHE_SET_BITS bits, so the value fits in usize.
        (h >> (u64::BITS - CACHE_SET_BITS)) as usize
    }
}

/// A cached result: a few destinations inline, or a run of the arena.
#[derive(Debug, Clone, Copy)]
enum CachedDests {
    Inline {
        len: u8,
        dests: [Endpoint; INLINE_DESTS],
    },
    Arena {
        start: u32,
        len: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    key: CacheKey,
    dests: CachedDests,
}

/// A set-associative cache of lookup results with a fixed number of entries, plus
/// a bounded arena for results too large to store inline.
#[derive(Debug)]
struct RouteCache {
    /// `CACHE_SETS * CACHE_WAYS` entries, set by set.
    slots: Box<[Option<CacheEntry>]>,
    /// Per set, the way to evict next when the set is full (round robin).
    victim: Box<[u8]>,
    /// Destinations of large results, run after run.
    arena: Vec<Endpoint>,
    /// The distinct runs stored in `arena`, as `(start, len)`.
    runs: Vec<(u32, u32)>,
    hits: u64,
    misses: u64,
}

impl RouteCache {
    fn new() -> Self {
        Self {
            slots: vec![None; CACHE_SETS * CACHE_WAYS].into_boxed_slice(),
            victim: vec![0; CACHE_SETS].into_boxed_slice(),
            arena: Vec::new(),
            runs: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    fn flush(&mut self) {
        self.slots.fill(None);
        self.victim.fill(0);
        self.arena.clear();
        self.runs.clear();
    }

    /// The slot holding `key`, if cached.
    fn find(&self, key: &CacheKey) -> Option<usize> {
        let base = key.set() * CACHE_WAYS;
        (base..base + CACHE_WAYS).find(|&i| matches!(&self.slots[i], Some(e) if e.key == *key))
    }

    /// The destinations cached in `slot` (empty if the slot is vacant).
    fn dests(&self, slot: usize) -> &[Endpoint] {
        match &self.slots[slot] {
            Some(CacheEntry {
                dests: CachedDests::Inline { len, dests },
                ..
            }) => dests.get(..usize::from(*len)).unwrap_or(&[]),
            Some(CacheEntry {
                dests: CachedDests::Arena { start, len },
                ..
            }) => {
                let start = *start as usize;
                self.arena.get(start..start + *len as usize).unwrap_or(&[])
            }
            None => &[],
        }
    }

    /// Stores a result that is not cached yet.
    fn insert(&mut self, key: CacheKey, result: &[Endpoint]) {
        let Some(dests) = self.store(result) else {
            return;
        };
        let set = key.set();
        let base = set * CACHE_WAYS;
        let way = match self.slots[base..base + CACHE_WAYS]
            .iter()
            .position(Option::is_none)
        {
            Some(way) => way,
            None => {
                let way = usize::from(self.victim[set]) % CACHE_WAYS;
                // CACHE_WAYS is tiny, so the next way fits in a u8.
                self.victim[set] = ((way + 1) % CACHE_WAYS) as u8;
                way
            }
        };
        self.slots[base + way] = Some(CacheEntry { key, dests });
    }

    /// Where a result will live: inline, or a (shared) arena run. `None` when it
    /// cannot be cached at all.
    fn store(&mut self, result: &[Endpoint]) -> Option<CachedDests> {
        if result.len() <= INLINE_DESTS {
            let mut dests = [Endpoint::Interface(0); INLINE_DESTS];
            dests[..result.len()].copy_from_slice(result);
            let len = u8::try_from(result.len()).ok()?;
            return Some(CachedDests::Inline { len, dests });
        }
        if result.len() > ARENA_MAX {
            return None;
        }
        // Large results are mostly "everyone but the arrival endpoint": share them.
        let len = u32::try_from(result.len()).ok()?;
        for &(start, run_len) in &self.runs {
            let s = start as usize;
            if run_len == len && self.arena.get(s..s + result.len()) == Some(result) {
                return Some(CachedDests::Arena { start, len });
            }
        }
        if self.arena.len() + result.len() > ARENA_MAX {
            // Evicted entries leave dead runs behind; start over rather than compact.
            self.flush();
        }
        let start = u32::try_from(self.arena.len()).ok()?;
        self.arena.extend_from_slice(result);
        self.runs.push((start, len));
        Some(CachedDests::Arena { start, len })
    }
}

/// The routing table: routes in insertion order, and the route cache.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    cache: RouteCache,
    /// The result of the last cache miss; reused so misses allocate only to grow.
    scratch: Vec<Endpoint>,
    /// Bitset of the endpoints in `scratch` (see `endpoint_bit`), so a miss
    /// deduplicates in linear time. All zero between lookups.
    seen: Vec<u64>,
}

/// An endpoint's bit in `RouteTable::seen`: interfaces even, links odd.
fn endpoint_bit(ep: Endpoint) -> usize {
    match ep {
        Endpoint::Interface(i) => usize::from(i) * 2,
        Endpoint::Link(i) => usize::from(i) * 2 + 1,
    }
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table with an empty cache.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            cache: RouteCache::new(),
            scratch: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Appends a route. Refuses a route identical to one already present.
    pub fn add(&mut self, route: Route) -> Result<(), RouteError> {
        if self.routes.contains(&route) {
            return Err(RouteError::Duplicate(route));
        }
        self.routes.push(route);
        self.cache.flush();
        Ok(())
    }

    /// Removes the route identical to `route`, keeping the order of the others.
    pub fn remove(&mut self, route: &Route) -> Result<(), RouteError> {
        let Some(i) = self.routes.iter().position(|r| r == route) else {
            return Err(RouteError::NotFound(*route));
        };
        self.routes.remove(i);
        self.cache.flush();
        Ok(())
    }

    /// Keeps only the routes for which `keep` returns true (for example, drops every
    /// route that mentions a deleted link). Returns how many were removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&Route) -> bool) -> usize {
        let before = self.routes.len();
        self.routes.retain(|r| keep(r));
        self.cache.flush();
        before - self.routes.len()
    }

    /// The routes, in table order.
    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.routes.iter()
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// How many routes send to `ep` or are limited to frames arriving on it.
    pub fn references(&self, ep: Endpoint) -> usize {
        self.routes
            .iter()
            .filter(|r| r.to == ep || r.from == Some(ep))
            .count()
    }

    /// Forgets every cached lookup. Route changes do this themselves; the engine
    /// calls it when links or interfaces come or go.
    pub fn flush_cache(&mut self) {
        self.cache.flush();
    }

    /// Cache `(hits, misses)` since the table was created.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache.hits, self.cache.misses)
    }

    /// Where a frame that arrived on `arrival` goes: the destinations of every route
    /// matching at the highest priority, without duplicates, in table order, never
    /// including `arrival` itself. Empty means drop (no route, or a frame shorter than
    /// the two MAC addresses). A cache hit does not allocate.
    pub fn lookup(&mut self, arrival: Endpoint, frame: &[u8]) -> &[Endpoint] {
        let Some(macs) = frame.get(..12).and_then(|b| <[u8; 12]>::try_from(b).ok()) else {
            return &[];
        };
        let key = CacheKey { arrival, macs };
        if let Some(slot) = self.cache.find(&key) {
            self.cache.hits += 1;
            return self.cache.dests(slot);
        }
        self.cache.misses += 1;
        let dst = MacAddr([macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]]);
        let src = MacAddr([macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]]);
        self.resolve(arrival, dst, src);
        self.cache.insert(key, &self.scratch);
        &self.scratch
    }

    /// Scans the table into `scratch` (the uncached lookup).
    fn resolve(&mut self, arrival: Endpoint, dst: MacAddr, src: MacAddr) {
        self.scratch.clear();
        let mut best = 0u8;
        for route in &self.routes {
            let Some(prio) = route.matches(arrival, dst, src) else {
                continue;
            };
            if prio > best {
                best = prio;
                Self::unmark(&mut self.seen, &self.scratch);
                self.scratch.clear();
            }
            // Routes pointing back at the arrival endpoint still set the top priority.
            if prio == best && route.to != arrival {
                let bit = endpoint_bit(route.to);
                let word = bit / 64;
                if word >= self.seen.len() {
                    // At most 2 * 65536 bits: bounded whatever the table holds.
                    self.seen.resize(word + 1, 0);
                }
                let mask = 1u64 << (bit % 64);
                if self.seen[word] & mask == 0 {
                    self.seen[word] |= mask;
                    self.scratch.push(route.to);
                }
            }
        }
        Self::unmark(&mut self.seen, &self.scratch);
    }

    /// Clears the bits of `eps` in `seen`.
    fn unmark(seen: &mut [u64], eps: &[Endpoint]) {
        for &ep in eps {
            let bit = endpoint_bit(ep);
            if let Some(w) = seen.get_mut(bit / 64) {
                *w &= !(1u64 << (bit % 64));
            }
        }
    }
}

impl<'a> IntoIterator for &'a RouteTable {
    type Item = &'a Route;
    type IntoIter = std::slice::Iter<'a, Route>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xb]);
    const C: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xc]);
    const BCAST: MacAddr = MacAddr::BROADCAST;

    const IF0: Endpoint = Endpoint::Interface(0);
    const IF1: Endpoint = Endpoint::Interface(1);
    const L0: Endpoint = Endpoint::Link(0);
    const L1: Endpoint = Endpoint::Link(1);
    const L2: Endpoint = Endpoint::Link(2);

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn route(src: MacMatch, dst: MacMatch, to: Endpoint) -> Route {
        Route {
            src,
            dst,
            to,
            from: None,
        }
    }

    fn table(routes: &[Route]) -> RouteTable {
        let mut t = RouteTable::new();
        for r in routes {
            assert_eq!(t.add(*r), Ok(()));
        }
        t
    }

    /// Priority of one route for a frame A -> B arriving on IF0.
    fn prio_a_to_b(src: MacMatch, dst: MacMatch) -> Option<u8> {
        route(src, dst, L0).matches(IF0, B, A)
    }

    #[test]
    fn not_src_not_dst_has_priority_3() {
        assert_eq!(prio_a_to_b(MacMatch::Not(C), MacMatch::Not(C)), Some(3));
    }

    #[test]
    fn not_src_any_dst_has_priority_5() {
        assert_eq!(prio_a_to_b(MacMatch::Not(C), MacMatch::Any), Some(5));
    }

    #[test]
    fn not_src_direct_dst_has_priority_7() {
        assert_eq!(prio_a_to_b(MacMatch::Not(C), MacMatch::Exact(B)), Some(7));
    }

    #[test]
    fn any_src_not_dst_has_priority_5() {
        assert_eq!(prio_a_to_b(MacMatch::Any, MacMatch::Not(C)), Some(5));
    }

    #[test]
    fn any_src_any_dst_has_priority_6() {
        assert_eq!(prio_a_to_b(MacMatch::Any, MacMatch::Any), Some(6));
    }

    #[test]
    fn any_src_direct_dst_has_priority_6() {
        assert_eq!(prio_a_to_b(MacMatch::Any, MacMatch::Exact(B)), Some(6));
    }

    #[test]
    fn direct_src_not_dst_has_priority_7() {
        assert_eq!(prio_a_to_b(MacMatch::Exact(A), MacMatch::Not(C)), Some(7));
    }

    #[test]
    fn direct_src_any_dst_has_priority_8() {
        assert_eq!(prio_a_to_b(MacMatch::Exact(A), MacMatch::Any), Some(8));
    }

    #[test]
    fn direct_src_direct_dst_has_priority_8() {
        assert_eq!(prio_a_to_b(MacMatch::Exact(A), MacMatch::Exact(B)), Some(8));
    }

    #[test]
    fn priority_fn_is_none_for_none_qualifier() {
        for q in [
            MacMatch::Any,
            MacMatch::None,
            MacMatch::Not(A),
            MacMatch::Exact(A),
        ] {
            assert_eq!(priority(&MacMatch::None, &q), None);
            assert_eq!(priority(&q, &MacMatch::None), None);
        }
    }

    #[test]
    fn none_never_matches() {
        for q in [
            MacMatch::Any,
            MacMatch::None,
            MacMatch::Not(C),
            MacMatch::Exact(A),
            MacMatch::Exact(B),
        ] {
            assert_eq!(prio_a_to_b(MacMatch::None, q), None);
            assert_eq!(prio_a_to_b(q, MacMatch::None), None);
        }
        let mut t = table(&[
            route(MacMatch::None, MacMatch::Any, L0),
            route(MacMatch::Any, MacMatch::None, L1),
        ]);
        assert!(t.lookup(IF0, &frame(B, A)).is_empty());
    }

    #[test]
    fn not_qualifier_excludes_its_mac() {
        assert_eq!(prio_a_to_b(MacMatch::Not(A), MacMatch::Any), None);
        assert_eq!(prio_a_to_b(MacMatch::Any, MacMatch::Not(B)), None);
    }

    #[test]
    fn direct_qualifier_needs_exact_mac() {
        assert_eq!(prio_a_to_b(MacMatch::Exact(C), MacMatch::Any), None);
        assert_eq!(prio_a_to_b(MacMatch::Any, MacMatch::Exact(C)), None);
        // The matcher looks at the right side: src is A, dst is B.
        assert_eq!(prio_a_to_b(MacMatch::Exact(B), MacMatch::Exact(A)), None);
    }

    #[test]
    fn highest_priority_wins() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Any, L0),         // 6
            route(MacMatch::Exact(A), MacMatch::Not(C), L1), // 7
            route(MacMatch::Not(C), MacMatch::Exact(B), L2), // 7
            route(MacMatch::Not(C), MacMatch::Not(C), IF1),  // 3
        ]);
        assert_eq!(t.lookup(IF0, &frame(B, A)), &[L1, L2]);
    }

    #[test]
    fn all_top_priority_ties_receive() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Exact(BCAST), L0),
            route(MacMatch::Any, MacMatch::Exact(BCAST), L1),
            route(MacMatch::Any, MacMatch::Any, L2), // also 6: ties with the broadcast routes
            route(MacMatch::Any, MacMatch::Exact(BCAST), IF1),
        ]);
        assert_eq!(t.lookup(IF0, &frame(BCAST, A)), &[L0, L1, L2, IF1]);
    }

    #[test]
    fn destinations_are_deduplicated_in_table_order() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Any, L1),
            route(MacMatch::Any, MacMatch::Exact(B), L0),
            route(MacMatch::Any, MacMatch::Not(C), IF1), // 5: loses
            route(MacMatch::Any, MacMatch::Exact(B), L1),
        ]);
        assert_eq!(t.lookup(IF0, &frame(B, A)), &[L1, L0]);
    }

    #[test]
    fn never_hairpins_to_arrival() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Exact(BCAST), L0),
            route(MacMatch::Any, MacMatch::Exact(BCAST), L1),
            route(MacMatch::Any, MacMatch::Exact(BCAST), IF0),
        ]);
        assert_eq!(t.lookup(L0, &frame(BCAST, A)), &[L1, IF0]);
        assert_eq!(t.lookup(IF0, &frame(BCAST, A)), &[L0, L1]);
    }

    #[test]
    fn hairpin_exclusion_does_not_fall_back_to_lower_priority() {
        // B lives behind L0; a frame for B arriving on L0 is dropped, not flooded.
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Exact(B), L0),
            route(MacMatch::Any, MacMatch::Not(C), L1),
        ]);
        assert!(t.lookup(L0, &frame(B, A)).is_empty());
        assert_eq!(t.lookup(IF0, &frame(B, A)), &[L0]);
    }

    #[test]
    fn from_constraint_filters() {
        let mut t = table(&[
            Route {
                src: MacMatch::Any,
                dst: MacMatch::Any,
                to: L1,
                from: Some(IF0),
            },
            Route {
                src: MacMatch::Any,
                dst: MacMatch::Any,
                to: L2,
                from: Some(IF1),
            },
            Route {
                src: MacMatch::Not(C),
                dst: MacMatch::Any,
                to: IF1,
                from: None,
            },
        ]);
        assert_eq!(t.lookup(IF0, &frame(B, A)), &[L1]);
        assert_eq!(t.lookup(IF1, &frame(B, A)), &[L2]);
        assert_eq!(t.lookup(L0, &frame(B, A)), &[IF1]);
        let r = t.iter().next().copied();
        assert_eq!(r.and_then(|r| r.matches(L0, B, A)), None);
    }

    #[test]
    fn no_match_is_empty() {
        let mut t = table(&[route(MacMatch::Exact(C), MacMatch::Any, L0)]);
        assert!(t.lookup(IF0, &frame(B, A)).is_empty());
        assert!(RouteTable::new().lookup(IF0, &frame(B, A)).is_empty());
    }

    #[test]
    fn short_frame_has_no_destinations() {
        let mut t = table(&[route(MacMatch::Any, MacMatch::Any, L0)]);
        let f = frame(B, A);
        for len in 0..12 {
            assert!(t.lookup(IF0, &f[..len]).is_empty(), "len {len}");
        }
        assert_eq!(t.lookup(IF0, &f[..12]), &[L0]);
    }

    #[test]
    fn duplicate_route_is_refused() {
        let r = route(MacMatch::Any, MacMatch::Any, L0);
        let mut t = table(&[r]);
        assert_eq!(t.add(r), Err(RouteError::Duplicate(r)));
        assert_eq!(
            t.add(Route {
                from: Some(IF0),
                ..r
            }),
            Ok(())
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn removing_absent_route_is_not_found() {
        let r = route(MacMatch::Any, MacMatch::Any, L0);
        let mut t = table(&[r]);
        let other = route(MacMatch::Any, MacMatch::Any, L1);
        assert_eq!(t.remove(&other), Err(RouteError::NotFound(other)));
        assert_eq!(t.remove(&r), Ok(()));
        assert!(t.is_empty());
        assert_eq!(t.remove(&r), Err(RouteError::NotFound(r)));
    }

    #[test]
    fn remove_keeps_table_order() {
        let rs = [
            route(MacMatch::Any, MacMatch::Any, L0),
            route(MacMatch::Any, MacMatch::Any, L1),
            route(MacMatch::Any, MacMatch::Any, L2),
        ];
        let mut t = table(&rs);
        assert_eq!(t.remove(&rs[1]), Ok(()));
        assert_eq!(t.iter().copied().collect::<Vec<_>>(), vec![rs[0], rs[2]]);
    }

    #[test]
    fn references_count_to_and_from() {
        let t = table(&[
            route(MacMatch::Any, MacMatch::Any, L0),
            Route {
                src: MacMatch::Any,
                dst: MacMatch::Any,
                to: L1,
                from: Some(L0),
            },
            Route {
                src: MacMatch::Any,
                dst: MacMatch::Any,
                to: L0,
                from: Some(L0),
            },
            route(MacMatch::Any, MacMatch::Any, IF0),
        ]);
        assert_eq!(t.references(L0), 3);
        assert_eq!(t.references(L1), 1);
        assert_eq!(t.references(IF0), 1);
        assert_eq!(t.references(L2), 0);
    }

    #[test]
    fn retain_removes_and_counts() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Any, L0),
            Route {
                src: MacMatch::Any,
                dst: MacMatch::Any,
                to: L1,
                from: Some(L0),
            },
            route(MacMatch::Any, MacMatch::Any, IF0),
        ]);
        assert_eq!(t.retain(|r| r.to != L0 && r.from != Some(L0)), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.references(L0), 0);
    }

    #[test]
    fn route_displays_its_fields() {
        let r = Route {
            src: MacMatch::Not(A),
            dst: MacMatch::Exact(BCAST),
            to: L1,
            from: Some(IF0),
        };
        assert_eq!(
            r.to_string(),
            "src=not-52:54:00:00:00:0a dst=ff:ff:ff:ff:ff:ff to=link#1 from=interface#0"
        );
        assert_eq!(
            route(MacMatch::Any, MacMatch::None, IF1).to_string(),
            "src=any dst=none to=interface#1 from=any"
        );
    }

    #[test]
    fn cache_hits_after_first_lookup() {
        let mut t = table(&[route(MacMatch::Any, MacMatch::Any, L0)]);
        let f = frame(B, A);
        assert_eq!(t.lookup(IF0, &f), &[L0]);
        assert_eq!(t.cache_stats(), (0, 1));
        assert_eq!(t.lookup(IF0, &f), &[L0]);
        assert_eq!(t.lookup(IF0, &f[..12]), &[L0]);
        assert_eq!(t.cache_stats(), (2, 1));
    }

    #[test]
    fn cache_remembers_no_route_drops() {
        let mut t = RouteTable::new();
        assert!(t.lookup(IF0, &frame(B, A)).is_empty());
        assert!(t.lookup(IF0, &frame(B, A)).is_empty());
        assert_eq!(t.cache_stats(), (1, 1));
    }

    #[test]
    fn cache_is_keyed_by_arrival_endpoint() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Any, L0),
            route(MacMatch::Any, MacMatch::Any, L1),
        ]);
        let f = frame(B, A);
        assert_eq!(t.lookup(L0, &f), &[L1]);
        assert_eq!(t.lookup(L1, &f), &[L0]);
        assert_eq!(t.lookup(L0, &f), &[L1]);
        assert_eq!(t.cache_stats(), (1, 2));
    }

    #[test]
    fn cache_is_keyed_by_both_macs() {
        let mut t = table(&[
            route(MacMatch::Exact(A), MacMatch::Any, L0),
            route(MacMatch::Any, MacMatch::Any, L1),
        ]);
        assert_eq!(t.lookup(IF0, &frame(B, A)), &[L0]);
        assert_eq!(t.lookup(IF0, &frame(B, C)), &[L1]);
        assert_eq!(t.lookup(IF0, &frame(A, B)), &[L1]);
        assert_eq!(t.cache_stats(), (0, 3));
    }

    #[test]
    fn cache_flushed_on_add() {
        let mut t = table(&[route(MacMatch::Any, MacMatch::Any, L0)]);
        let f = frame(B, A);
        assert_eq!(t.lookup(IF0, &f), &[L0]);
        assert_eq!(t.add(route(MacMatch::Any, MacMatch::Exact(B), L1)), Ok(()));
        assert_eq!(t.lookup(IF0, &f), &[L0, L1]);
        assert_eq!(
            t.add(route(MacMatch::Exact(A), MacMatch::Exact(B), L2)),
            Ok(())
        );
        assert_eq!(t.lookup(IF0, &f), &[L2]);
        assert_eq!(t.cache_stats(), (0, 3));
    }

    #[test]
    fn cache_flushed_on_remove() {
        let top = route(MacMatch::Exact(A), MacMatch::Any, L1);
        let mut t = table(&[route(MacMatch::Any, MacMatch::Any, L0), top]);
        let f = frame(B, A);
        assert_eq!(t.lookup(IF0, &f), &[L1]);
        assert_eq!(t.remove(&top), Ok(()));
        assert_eq!(t.lookup(IF0, &f), &[L0]);
    }

    #[test]
    fn cache_flushed_on_retain() {
        let mut t = table(&[
            route(MacMatch::Any, MacMatch::Any, L0),
            route(MacMatch::Exact(A), MacMatch::Any, L1),
        ]);
        let f = frame(B, A);
        assert_eq!(t.lookup(IF0, &f), &[L1]);
        assert_eq!(t.retain(|r| r.to != L1), 1);
        assert_eq!(t.lookup(IF0, &f), &[L0]);
    }

    #[test]
    fn flush_cache_forces_a_miss() {
        let mut t = table(&[route(MacMatch::Any, MacMatch::Any, L0)]);
        let f = frame(B, A);
        assert_eq!(t.lookup(IF0, &f), &[L0]);
        t.flush_cache();
        assert_eq!(t.lookup(IF0, &f), &[L0]);
        assert_eq!(t.cache_stats(), (0, 2));
    }

    fn fan_out_table(n: u16) -> RouteTable {
        let mut t = RouteTable::new();
        for i in 0..n {
            assert_eq!(
                t.add(route(
                    MacMatch::Any,
                    MacMatch::Exact(BCAST),
                    Endpoint::Link(i)
                )),
                Ok(())
            );
        }
        t
    }

    #[test]
    fn large_fan_out_is_cached_and_shared() {
        let mut t = fan_out_table(40);
        let all: Vec<Endpoint> = (0..40).map(Endpoint::Link).collect();
        let f = frame(BCAST, A);
        assert_eq!(t.lookup(IF0, &f), &all[..]);
        assert_eq!(t.lookup(IF0, &f), &all[..]);
        assert_eq!(t.lookup(IF0, &frame(BCAST, B)), &all[..]);
        assert_eq!(t.lookup(L0, &f), &all[1..]);
        assert_eq!(t.lookup(L0, &f), &all[1..]);
        assert_eq!(t.cache_stats(), (2, 3));
        // Two distinct large results are stored once each.
        assert_eq!(t.cache.runs.len(), 2);
        assert_eq!(t.cache.arena.len(), 40 + 39);
    }

    #[test]
    fn cache_memory_is_bounded_whatever_macs_arrive() {
        let n = 300u16;
        let mut t = fan_out_table(n);
        let slots = t.cache.slots.len();
        // Every arrival link gives a distinct large result; every source MAC a new key.
        for i in 0..5_000u32 {
            let arrival = Endpoint::Link((i % u32::from(n)) as u16);
            let b = i.to_be_bytes();
            let src = MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]]);
            let got = t.lookup(arrival, &frame(BCAST, src));
            assert_eq!(got.len(), usize::from(n) - 1);
            assert!(!got.contains(&arrival));
            assert!(t.cache.arena.len() <= ARENA_MAX);
            assert_eq!(t.cache.slots.len(), slots);
        }
        assert_eq!(t.cache_stats(), (0, 5_000));
    }

    #[test]
    fn set_index_is_in_range() {
        for i in 0..4096u16 {
            let b = i.to_be_bytes();
            for arrival in [Endpoint::Interface(i), Endpoint::Link(i)] {
                let key = CacheKey {
                    arrival,
                    macs: [b[0], b[1], 0, 0, 0, 1, 0xff, 0, 0, b[1], b[0], 7],
                };
                assert!(key.set() < CACHE_SETS);
            }
        }
    }

    // ---- Property test against a plainly written reference matcher. ----

    /// VNET/P's table written out case by case.
    fn reference_priority(src: MacMatch, dst: MacMatch) -> u8 {
        use MacMatch::*;
        match (src, dst) {
            (Not(_), Not(_)) => 3,
            (Not(_), Any) => 5,
            (Not(_), Exact(_)) => 7,
            (Any, Not(_)) => 5,
            (Any, Any) => 6,
            (Any, Exact(_)) => 6,
            (Exact(_), Not(_)) => 7,
            (Exact(_), Any) => 8,
            (Exact(_), Exact(_)) => 8,
            (None, _) | (_, None) => 0,
        }
    }

    fn reference_side_matches(q: MacMatch, mac: MacAddr) -> bool {
        match q {
            MacMatch::Any => true,
            MacMatch::None => false,
            MacMatch::Not(m) => m != mac,
            MacMatch::Exact(m) => m == mac,
        }
    }

    fn reference_lookup(
        routes: &[Route],
        arrival: Endpoint,
        dst: MacAddr,
        src: MacAddr,
    ) -> Vec<Endpoint> {
        let mut matched: Vec<(u8, Endpoint)> = Vec::new();
        for r in routes {
            if let Some(from) = r.from
                && from != arrival
            {
                continue;
            }
            if reference_side_matches(r.src, src) && reference_side_matches(r.dst, dst) {
                matched.push((reference_priority(r.src, r.dst), r.to));
            }
        }
        let top = matched.iter().map(|m| m.0).max().unwrap_or(0);
        let mut out = Vec::new();
        for (p, to) in matched {
            if p == top && to != arrival && !out.contains(&to) {
                out.push(to);
            }
        }
        out
    }

    const POOL: [MacAddr; 4] = [A, B, C, BCAST];

    fn any_mac() -> impl Strategy<Value = MacAddr> {
        (0..POOL.len()).prop_map(|i| POOL[i])
    }

    fn any_qualifier() -> impl Strategy<Value = MacMatch> {
        prop_oneof![
            Just(MacMatch::Any),
            Just(MacMatch::None),
            any_mac().prop_map(MacMatch::Not),
            any_mac().prop_map(MacMatch::Exact),
        ]
    }

    fn any_endpoint() -> impl Strategy<Value = Endpoint> {
        prop_oneof![
            (0u16..3).prop_map(Endpoint::Interface),
            (0u16..3).prop_map(Endpoint::Link)
        ]
    }

    fn any_route() -> impl Strategy<Value = Route> {
        (
            any_qualifier(),
            any_qualifier(),
            any_endpoint(),
            proptest::option::of(any_endpoint()),
        )
            .prop_map(|(src, dst, to, from)| Route { src, dst, to, from })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lookup(Endpoint, MacAddr, MacAddr),
        Add(Route),
        Remove(usize),
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (any_endpoint(), any_mac(), any_mac()).prop_map(|(e, d, s)| Op::Lookup(e, d, s)),
            1 => any_route().prop_map(Op::Add),
            1 => (0usize..16).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_reference_matcher(
            routes in proptest::collection::vec(any_route(), 0..12),
            ops in proptest::collection::vec(any_op(), 1..40),
        ) {
            let mut t = RouteTable::new();
            let mut model: Vec<Route> = Vec::new();
            for r in routes {
                let dup = model.contains(&r);
                prop_assert_eq!(t.add(r).is_err(), dup);
                if !dup {
                    model.push(r);
                }
            }
            let mut lookups = 0u64;
            for op in ops {
                match op {
                    Op::Lookup(arrival, dst, src) => {
                        lookups += 1;
                        let want = reference_lookup(&model, arrival, dst, src);
                        let f = frame(dst, src);
                        prop_assert_eq!(t.lookup(arrival, &f), &want[..]);
                        prop_assert_eq!(t.lookup(arrival, &f), &want[..]);
                    }
                    Op::Add(r) => {
                        let dup = model.contains(&r);
                        prop_assert_eq!(t.add(r).is_err(), dup);
                        if !dup {
                            model.push(r);
                        }
                    }
                    Op::Remove(i) => {
                        if let Some(r) = model.get(i).copied() {
                            model.remove(i);
                            prop_assert_eq!(t.remove(&r), Ok(()));
                        }
                    }
                }
                prop_assert_eq!(t.iter().copied().collect::<Vec<_>>(), model.clone());
            }
            // Each lookup runs twice with no change in between: the second always hits.
            let (hits, misses) = t.cache_stats();
            prop_assert!(hits >= lookups);
            prop_assert_eq!(hits + misses, 2 * lookups);
        }

        #[test]
        fn route_matches_agrees_with_reference(r in any_route(), arrival in any_endpoint(), dst in any_mac(), src in any_mac()) {
            let want = reference_lookup(&[r], arrival, dst, src);
            let got = r.matches(arrival, dst, src);
            let from_ok = r.from.is_none_or(|f| f == arrival);
            let sides_ok = reference_side_matches(r.src, src) && reference_side_matches(r.dst, dst);
            let expected = (from_ok && sides_ok && reference_priority(r.src, r.dst) > 0)
                .then(|| reference_priority(r.src, r.dst));
            prop_assert_eq!(got, expected);
            prop_assert_eq!(got.is_some() && r.to != arrival, !want.is_empty());
        }
    }
}
