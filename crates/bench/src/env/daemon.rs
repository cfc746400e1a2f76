//! The daemons and configurations the bench compares, and what each is called in
//! the report.

/// The daemons under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// portcullisd, nftables driver.
    Portcullisd,
    /// The same, run as one process with full privileges (`--no-privsep`): the
    /// baseline the privilege separation's cost is measured against.
    PortcullisdOneProcess,
    /// portcullisd, iptables driver with iptables-nft rules, grants in ipsets (`backend = "iptables-nft"`).
    PortcullisdIptNft,
    /// portcullisd, iptables driver with iptables-legacy rules, grants in ipsets (`backend = "iptables-legacy"`).
    PortcullisdIptLegacy,
    /// knockd, start_command `iptables -I`, stop_command `iptables -D`.
    KnockdIpt,
    /// knockd, start_command `nft add element` with a timeout.
    KnockdNft,
    /// fwknopd (iptables), HMAC-SHA256 + Rijndael, driven by the real `fwknop` client.
    Fwknopd,
    /// portcullisd with `[spa]` (an fwknop stanza with fwknopd's keys and a native
    /// user), driven by packets from the real `fwknop` client.
    PortcullisdSpaFwknop,
    /// portcullisd run on fwknopd's own fwknopd.conf + access.conf (iptables, ipset
    /// grants, ACCEPT chain on an INPUT-policy-DROP host), driven by the real `fwknop` client.
    PortcullisdFwknopdConf,
    /// The same portcullisd SPA configuration, driven by native packets
    /// (`portcullis_proto::spa::native::seal`, in process).
    PortcullisdSpaNative,
    /// The same portcullisd SPA configuration plus the knock door, driven by knocks
    /// (knock handling while SPA junk costs crypto).
    PortcullisdSpaKnock,
    /// No daemon: `portcullisd generate --kernel nftables` loaded with `nft -f`.
    KernelNft,
    /// No daemon: `portcullisd generate --kernel iptables` (recent lists).
    KernelIpt,
}

/// Which SPA packet an attempt sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaFormat {
    /// Built by the real `fwknop` client (HMAC-SHA256 + Rijndael).
    Fwknop,
    /// portcullis native (X25519 + ChaCha20-Poly1305 + Ed25519), 256 bytes.
    Native,
}

impl Daemon {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Portcullisd => "portcullisd",
            Daemon::PortcullisdOneProcess => "portcullisd (one process, --no-privsep)",
            Daemon::PortcullisdIptNft => "portcullisd (iptables-nft)",
            Daemon::PortcullisdIptLegacy => "portcullisd (iptables-legacy)",
            Daemon::KnockdIpt | Daemon::KnockdNft => "knockd",
            Daemon::Fwknopd => "fwknopd",
            Daemon::PortcullisdSpaFwknop => "portcullisd SPA, fwknop format",
            Daemon::PortcullisdSpaNative => "portcullisd SPA, native format",
            Daemon::PortcullisdSpaKnock => "portcullisd SPA + door, knocks",
            Daemon::PortcullisdFwknopdConf => "portcullisd (run --config fwknopd.conf)",
            Daemon::KernelNft | Daemon::KernelIpt => "kernel-only (no daemon)",
        }
    }

    /// portcullisd in any configuration.
    pub fn is_portcullisd(self) -> bool {
        matches!(
            self,
            Daemon::Portcullisd
                | Daemon::PortcullisdOneProcess
                | Daemon::PortcullisdIptNft
                | Daemon::PortcullisdIptLegacy
                | Daemon::PortcullisdSpaFwknop
                | Daemon::PortcullisdSpaNative
                | Daemon::PortcullisdSpaKnock
                | Daemon::PortcullisdFwknopdConf
        )
    }

    /// portcullisd's `backend` key for this configuration.
    pub fn backend(self) -> &'static str {
        match self {
            Daemon::PortcullisdIptNft => "iptables-nft",
            Daemon::PortcullisdIptLegacy => "iptables-legacy",
            _ => "nftables",
        }
    }

    /// The SPA packet an attempt sends, or `None` for knocks.
    pub fn spa(self) -> Option<SpaFormat> {
        match self {
            Daemon::Fwknopd | Daemon::PortcullisdSpaFwknop | Daemon::PortcullisdFwknopdConf => {
                Some(SpaFormat::Fwknop)
            }
            Daemon::PortcullisdSpaNative => Some(SpaFormat::Native),
            Daemon::Portcullisd
            | Daemon::PortcullisdOneProcess
            | Daemon::PortcullisdIptNft
            | Daemon::PortcullisdIptLegacy
            | Daemon::KnockdIpt
            | Daemon::KnockdNft
            | Daemon::PortcullisdSpaKnock
            | Daemon::KernelNft
            | Daemon::KernelIpt => None,
        }
    }

    /// Firewall column.
    pub fn fw(self) -> &'static str {
        match self {
            Daemon::Portcullisd
            | Daemon::PortcullisdOneProcess
            | Daemon::PortcullisdSpaFwknop
            | Daemon::PortcullisdSpaNative
            | Daemon::PortcullisdSpaKnock => "nftables (netlink)",
            Daemon::PortcullisdIptNft => "iptables-nft (driver: ipset grants)",
            Daemon::PortcullisdIptLegacy => "iptables-legacy (driver: ipset grants)",
            Daemon::KnockdIpt => "iptables",
            Daemon::KnockdNft => "nft set",
            Daemon::Fwknopd => "iptables (INPUT policy DROP, FWKNOP_INPUT rules)",
            Daemon::PortcullisdFwknopdConf => "iptables (INPUT policy DROP, FWKNOP_INPUT + ipset)",
            Daemon::KernelNft => "nftables sets (generated)",
            Daemon::KernelIpt => "iptables-nft recent (generated)",
        }
    }

    /// Kernel-only mode: no process runs, the ruleset does the knocking.
    pub fn is_kernel(self) -> bool {
        matches!(self, Daemon::KernelNft | Daemon::KernelIpt)
    }
}
