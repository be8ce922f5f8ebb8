//! The rtnetlink requests the fast path makes, each the message the bridge plugin's
//! netlink library (vishvananda/netlink, in containernetworking-plugins 1.1) sends for
//! the same step, over a plain blocking `NETLINK_ROUTE` socket. A socket acts on the
//! network namespace it was opened in, so one opened before and one after `setns` reach
//! the runtime's and the pod's namespaces from the same thread.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::Socket;

/// `IFLA_PROTINFO` (not exported as a constant by the crate).
const IFLA_PROTINFO: u16 = 12;
/// `IFLA_BRPORT_MODE`: a bridge port's hairpin mode.
const IFLA_BRPORT_MODE: u16 = 4;
/// `NLA_F_NESTED`: without it the kernel reads `IFLA_PROTINFO` as a port state.
const NLA_F_NESTED: u16 = 1 << 15;

/// What the fast path needs to know of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub kind: Option<InfoKind>,
    pub up: bool,
}

impl Link {
    /// `aa:bb:cc:dd:ee:ff`, as Go's `net.HardwareAddr.String()`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and reads until its acknowledgement (or error) or, for a GET,
    /// its answer. Returns the answer's messages.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rbuf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[offset..n])
                    .map_err(|e| io::Error::other(format!("netlink answer: {e}")))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(answers),
                                Some(_) => Err(e.to_io()),
                            }
                        }
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(m) => {
                            answers.push(m);
                            if flags & NLM_F_ACK == 0 && reply.header.flags & 2 == 0 {
                                // A single (not multipart) answer to a GET.
                                return Ok(answers);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// The link called `name`; `Ok(None)` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link add <name> type bridge` (kernel defaults; txqueuelen left to the kernel).
    /// `EEXIST` is the caller's to judge.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(drop)
    }

    /// A veth pair: `name` here, `peer` in the namespace `peer_ns` (txqueuelen 0 on both
    /// ends, as the plugin's library sends it).
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_ns: RawFd) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        peer_msg.attributes.push(LinkAttribute::TxQueueLen(0));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_ns));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.push(LinkAttribute::TxQueueLen(0));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(drop)
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_ACK)
            .map(drop)
    }

    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Controller(master));
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    /// A bridge port's hairpin mode (`AF_BRIDGE` `IFLA_PROTINFO`, nested).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> io::Result<()> {
        // One nested attribute: length 5, type IFLA_BRPORT_MODE, the u8, padding.
        let mut mode = Vec::with_capacity(8);
        mode.extend_from_slice(&5u16.to_ne_bytes());
        mode.extend_from_slice(&IFLA_BRPORT_MODE.to_ne_bytes());
        mode.extend_from_slice(&[u8::from(on), 0, 0, 0]);
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Bridge;
        m.header.index = index;
        m.attributes.push(LinkAttribute::Other(DefaultNla::new(
            IFLA_PROTINFO | NLA_F_NESTED,
            mode,
        )));
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    pub fn set_mac(&mut self, index: u32, mac: &[u8]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    /// Every address of link `index` (all families), with its prefix length.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<(std::net::IpAddr, u8)>> {
        self.addresses_of(index, AddressFamily::Unspec)
    }

    /// The IPv4 addresses of link `index`. Asked of the kernel by family, as the plugin's
    /// library does: on a host with hundreds of veths (each with an IPv6 link-local
    /// address), a dump of every family is hundreds of messages to read and throw away.
    pub fn addresses_v4(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        Ok(self
            .addresses_of(index, AddressFamily::Inet)?
            .into_iter()
            .filter_map(|(ip, prefix)| match ip {
                std::net::IpAddr::V4(v4) => Some((v4, prefix)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect())
    }

    fn addresses_of(
        &mut self,
        index: u32,
        family: AddressFamily,
    ) -> io::Result<Vec<(std::net::IpAddr, u8)>> {
        let mut m = AddressMessage::default();
        m.header.family = family;
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(m),
            netlink_packet_core::NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    // IFA_ADDRESS is the address for both families (IFA_LOCAL only
                    // differs on point-to-point links).
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some((*ip, a.header.prefix_len)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), NLM_F_ACK)
            .map(drop)
    }

    pub fn set_down(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_ACK)
            .map(drop)
    }

    /// `ip addr add <ip>/<prefix> brd <computed> dev <index>` (the plugin's library adds
    /// the broadcast address below /31).
    pub fn add_address_v4(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes
            .push(AddressAttribute::Local(std::net::IpAddr::V4(ip)));
        m.attributes
            .push(AddressAttribute::Address(std::net::IpAddr::V4(ip)));
        if prefix < 31 {
            m.attributes
                .push(AddressAttribute::Broadcast(broadcast(ip, prefix)));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(drop)
    }

    /// A unicast route in the main table, protocol boot, through `gateway` (if any) on
    /// link `index` (`RouteAddEcmp`: create, no exclusivity).
    pub fn add_route_v4(
        &mut self,
        dst: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        index: u32,
    ) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        if let Some(gw) = gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_ACK)
            .map(drop)
    }
}

fn link_of(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        kind: None,
        up: false,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(mac) => link.mac = mac.clone(),
            LinkAttribute::OperState(s) => link.up = *s == State::Up,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.clone());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// The broadcast address of `ip`/`prefix`.
pub fn broadcast(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(u32::from(ip) | !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_and_mac() {
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 77, 0, 2), 24),
            Ipv4Addr::new(10, 77, 0, 255)
        );
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 88, 3, 2), 16),
            Ipv4Addr::new(10, 88, 255, 255)
        );
        assert_eq!(
            format_mac(&[0x4e, 0x20, 0xdb, 0xcb, 0x48, 0x03]),
            "4e:20:db:cb:48:03"
        );
    }
}
