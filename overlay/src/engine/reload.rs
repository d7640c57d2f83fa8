//! `reload`: make the running engine match its configuration file again.
//!
//! The file is the truth: after a reload the links, interfaces and routes are exactly
//! those it lists (changes made over the control socket since are undone). Unchanged
//! links and interfaces keep their ports, slots and counters and see no interruption;
//! only the difference is applied. Everything that can fail (reading and validating
//! the file, creating new ports) happens before the first change, so a failed reload
//! changes nothing.

use std::collections::HashSet;

use super::Engine;
use crate::config::{self, InterfaceConfig};
use crate::types::Endpoint;

/// Interface settings that cannot change in place.
fn same_device(a: &InterfaceConfig, b: &InterfaceConfig) -> bool {
    a.kind == b.kind && a.mac == b.mac && a.mtu == b.mtu && a.offload == b.offload
}

impl Engine {
    /// Re-reads the configuration file and applies the difference.
    pub fn reload(&mut self) -> Result<String, String> {
        let Some(src) = self.reload.as_mut() else {
            return Err(
                "reload needs the daemon's configuration file (started without one)".into(),
            );
        };
        let new = config::load(&src.path).map_err(|e| e.to_string())?;
        let old = &src.applied;
        if new.host.name != old.host.name
            || new.host.underlay != old.host.underlay
            || new.host.control != old.host.control
            || new.host.metrics != old.host.metrics
        {
            return Err(
                "[host] name, underlay, control or metrics changed: restart the daemon to apply that".into(),
            );
        }

        // Interfaces: keep, update in place, add, or remove.
        let mut remove_ifaces = Vec::new();
        let mut live_names = HashSet::new();
        for (slot, iface) in self.interfaces.iter().enumerate() {
            let Some(iface) = iface else { continue };
            live_names.insert(iface.name.clone());
            match new.interfaces.iter().find(|c| c.name == iface.name) {
                None => remove_ifaces.push(slot as u16),
                Some(c) => {
                    if !iface
                        .config
                        .as_ref()
                        .is_some_and(|live| same_device(live, c))
                    {
                        return Err(format!(
                            "interface {:?} changed its kind, MAC or MTU: remove it from the file, reload, then add it back",
                            iface.name
                        ));
                    }
                }
            }
        }
        let add_ifaces: Vec<InterfaceConfig> = new
            .interfaces
            .iter()
            .filter(|c| !live_names.contains(&c.name))
            .cloned()
            .collect();

        // Links: unchanged ones stay; changed ones are removed and added again.
        let mut remove_links = Vec::new();
        for (slot, l) in self.links.iter() {
            let keep = new.links.iter().any(|n| {
                n.name == l.name
                    && n.peer == l.peer
                    && n.encap == l.encap
                    && n.key == l.key
                    && n.mtu as usize == l.mtu
            });
            if !keep {
                remove_links.push((slot, l.name.clone()));
            }
        }
        let add_links: Vec<_> = new
            .links
            .iter()
            .filter(|n| {
                self.links.find(&n.name).is_none()
                    || remove_links.iter().any(|(_, name)| name == &n.name)
            })
            .cloned()
            .collect();

        // Create the new ports first: if one fails, nothing has changed yet.
        let mut ports = Vec::with_capacity(add_ifaces.len());
        for c in &add_ifaces {
            let Some(factory) = self.factory.as_mut() else {
                return Err("this daemon cannot create interfaces (no device factory)".into());
            };
            match crate::shard::seat_port(self.seat.as_ref(), factory.as_mut(), c) {
                Ok(p) => ports.push(p),
                Err(e) => return Err(format!("interface {}: {e}; nothing was changed", c.name)),
            }
        }

        // Routes to drop: not wanted any more, or touching an endpoint that goes away.
        let gone: HashSet<Endpoint> = remove_ifaces
            .iter()
            .map(|&i| Endpoint::Interface(i))
            .chain(remove_links.iter().map(|&(l, _)| Endpoint::Link(l)))
            .collect();
        let wanted: HashSet<String> = new.routes.iter().map(|r| r.to_string()).collect();
        let drop_routes: Vec<_> = self
            .routes
            .iter()
            .filter(|r| {
                gone.contains(&r.to)
                    || r.from.is_some_and(|f| gone.contains(&f))
                    || !wanted.contains(&self.spec_from_route(r).to_string())
            })
            .copied()
            .collect();

        // Apply.
        for r in &drop_routes {
            let _ = self.routes.remove(r);
        }
        for (_, name) in &remove_links {
            let _ = self.links.remove(name);
        }
        for &i in &remove_ifaces {
            self.interfaces[i as usize] = None;
        }
        for (c, port) in add_ifaces.iter().zip(ports) {
            self.add_seated_interface(c, port)
                .map_err(|e| format!("interface {}: {e}", c.name))?;
        }
        for f in self.interfaces.iter_mut().flatten() {
            if let Some(c) = new.interfaces.iter().find(|c| c.name == f.name) {
                f.anti_spoof = c.anti_spoof;
                f.config = Some(c.clone());
            }
        }
        for l in &add_links {
            self.add_keyed_link(&l.name, l.peer, l.encap, l.key)
                .and_then(|ep| self.set_link_mtu(ep, l.mtu as usize))
                .map_err(|e| format!("link {}: {e}", l.name))?;
        }
        let present: HashSet<String> = self
            .routes
            .iter()
            .map(|r| self.spec_from_route(r).to_string())
            .collect();
        let mut added_routes = 0;
        for spec in &new.routes {
            if !present.contains(&spec.to_string()) {
                self.add_route(spec)
                    .map_err(|e| format!("route {spec}: {e}"))?;
                added_routes += 1;
            }
        }
        self.routes.flush_cache();
        self.dispatch = new.host.dispatch;
        let summary = format!(
            "reloaded: interfaces +{} -{}, links +{} -{}, routes +{} -{}",
            add_ifaces.len(),
            remove_ifaces.len(),
            add_links.len(),
            remove_links.len(),
            added_routes,
            drop_routes.len()
        );
        if let Some(src) = self.reload.as_mut() {
            src.applied = new;
        }
        tracing::info!("{summary}");
        Ok(summary)
    }
}
