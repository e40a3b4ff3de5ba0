//! `netd network ...`: Docker's network commands over the API.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use super::{FormatArgs, exit_code, inspect_each, print_table, print_warnings, remove_each};
use crate::{
    api::{Client, ConnectRequest, NetworkView, encode_segment},
    network_request::NetworkRequest,
};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(FormatArgs),
    /// Show networks as JSON, with their endpoints.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while containers are attached).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network (it gets one more interface).
    Connect {
        /// A static IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        /// A static IPv6 address on the network (a network with --ipv6).
        #[arg(long)]
        ip6: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Also when the container's published ports lead to that network.
        #[arg(short = 'f', long)]
        force: bool,
        network: String,
        container: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Driver: `bridge` (the default), `macvlan`, or `overlay` (across the nodes of a
    /// cluster: `netd daemon --cluster-store`).
    #[arg(short = 'd', long)]
    driver: Option<String>,
    /// Subnet in CIDR format, one IPv4 and (with --ipv6) one IPv6 [default: the next free
    /// one of Docker's IPv4 pools; for IPv6, the next free /64 of the node's ULA /48]
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway for the subnet of its family [default: the subnet's first host address]
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container addresses from this sub-range of the subnet of its family.
    #[arg(long)]
    ip_range: Vec<String>,
    /// Give the network IPv6 too (dual stack): containers get an IPv6 address and route.
    #[arg(long)]
    ipv6: bool,
    /// IPv4 on the network (Docker's flag, default true): `--ipv4=false --ipv6` makes an
    /// IPv6-only bridge network (its containers have no IPv4 address; their IPv4 and ARP
    /// are dropped).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    ipv4: Option<bool>,
    /// No masquerade, no route out, no published ports.
    #[arg(long)]
    internal: bool,
    /// Driver options: com.netd.bridge.name=NAME, com.netd.bridge.enable_icc=false,
    /// com.netd.bridge.enable_ip_masquerade=false, com.netd.driver.mtu=N,
    /// com.netd.network.gateway_mode=nat|nat-unprotected|routed,
    /// com.netd.network.gateway_mode_ipv6=nat|routed (Docker's com.docker.network.*
    /// spellings work too); for macvlan: parent=IFACE,
    /// macvlan_mode=bridge|vepa|private|passthru, com.netd.macvlan.host_access=true; for
    /// overlay: com.netd.vxlan.id=N.
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// MTU of the bridge and the containers' interfaces.
    #[arg(long)]
    mtu: Option<u32>,
    /// An address of another host on the network, never given to a container
    /// (NAME=IP; repeatable).
    #[arg(long = "aux-address", value_name = "NAME=IP")]
    aux_address: Vec<String>,
    /// An overlay network standalone containers may join (Docker's flag).
    #[arg(long)]
    attachable: bool,
    name: String,
}

pub async fn run(client: &Client, command: NetworkCommand) -> Result<ExitCode> {
    match command {
        NetworkCommand::Create(a) => {
            let req = NetworkRequest {
                name: a.name,
                driver: a.driver,
                subnet: a.subnet,
                gateway: a.gateway,
                ip_range: a.ip_range,
                ipv6: a.ipv6,
                ipv4: a.ipv4,
                internal: a.internal,
                options: a.opt,
                mtu: a.mtu,
                aux_addresses: a.aux_address,
                attachable: a.attachable,
            };
            let n: NetworkView = client.call(Method::POST, "networks", Some(&req)).await?;
            println!("{}", n.id);
            Ok(ExitCode::SUCCESS)
        }
        NetworkCommand::Ls(format) => ls(client, format).await,
        NetworkCommand::Inspect { names } => inspect_each(client, "networks", &names).await,
        NetworkCommand::Rm { names } => remove_each(client, "networks", &names, "").await,
        NetworkCommand::Connect {
            ip,
            ip6,
            network,
            container,
        } => {
            let req = ConnectRequest { container, ip, ip6 };
            client
                .call::<Value>(
                    Method::POST,
                    &format!("networks/{}/connect", encode_segment(&network)),
                    Some(&req),
                )
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            let req = ConnectRequest {
                container,
                ..Default::default()
            };
            let force = if force { "?force=1" } else { "" };
            let answer = client
                .call::<Value>(
                    Method::POST,
                    &format!("networks/{}/disconnect{force}", encode_segment(&network)),
                    Some(&req),
                )
                .await?;
            Ok(exit_code(print_warnings(&answer)))
        }
    }
}

/// `docker network ls`: NETWORK ID, NAME, DRIVER, SCOPE.
async fn ls(client: &Client, format: FormatArgs) -> Result<ExitCode> {
    let networks: Vec<NetworkView> = client.call(Method::GET, "networks", None::<&()>).await?;
    if format.json()? {
        println!("{}", serde_json::to_string_pretty(&networks)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = networks
        .iter()
        .map(|v| {
            [
                v.id.clone(),
                v.name.clone(),
                v.driver.clone(),
                v.scope.clone(),
            ]
        })
        .collect();
    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
    Ok(ExitCode::SUCCESS)
}
