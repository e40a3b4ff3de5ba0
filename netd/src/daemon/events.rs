//! The node's events as the API's changes make them (`netd events`): each announced
//! after the change it tells of has been made and saved.

use super::Daemon;
use crate::api::{ContainerView, NetworkView};

impl Daemon {
    /// A container made (and started, if it runs a command): with its networks (their
    /// IDs from `network_id`) and published ports.
    pub(super) fn announce_container(
        &self,
        c: &ContainerView,
        network_id: impl Fn(&str) -> String,
    ) {
        let attrs = [("network", c.network_mode.clone())];
        self.events
            .emit("container", "create", &c.id, &c.name, &attrs);
        if c.process.is_some() {
            self.events
                .emit("container", "start", &c.id, &c.name, &attrs);
        }
        for e in &c.endpoints {
            self.announce_connection("connect", &network_id(&e.network), &e.network, c);
        }
        for p in &c.ports {
            self.events.emit(
                "port",
                "publish",
                &p.to_string(),
                &c.name,
                &[("container", c.name.clone())],
            );
        }
    }

    /// A container removed, as it was before: its ports and networks go first.
    pub(super) fn announce_removal(&self, c: &ContainerView, network_id: impl Fn(&str) -> String) {
        for p in &c.ports {
            self.events.emit(
                "port",
                "unpublish",
                &p.to_string(),
                &c.name,
                &[("container", c.name.clone())],
            );
        }
        for e in &c.endpoints {
            self.announce_connection("disconnect", &network_id(&e.network), &e.network, c);
        }
        self.events.emit(
            "container",
            "remove",
            &c.id,
            &c.name,
            &[("network", c.network_mode.clone())],
        );
    }

    /// `connect` or `disconnect` of container `c` and network `name` (ID `id`).
    pub(super) fn announce_connection(
        &self,
        action: &str,
        id: &str,
        name: &str,
        c: &ContainerView,
    ) {
        self.events.emit(
            "network",
            action,
            id,
            name,
            &[("container", c.name.clone())],
        );
    }

    /// A network created or removed.
    pub(super) fn announce_network(&self, action: &str, n: &NetworkView) {
        self.events.emit(
            "network",
            action,
            &n.id,
            &n.name,
            &[("driver", n.driver.clone()), ("scope", n.scope.clone())],
        );
    }

    /// A container's command exited (`die`, with its exit code when known).
    pub(super) fn announce_exit(&self, id: &str, name: &str, code: Option<i32>) {
        let code = code.map_or_else(|| "unknown".to_string(), |c| c.to_string());
        self.events
            .emit("container", "die", id, name, &[("exitCode", code)]);
    }
}
