//! nftables driver over netlink. TODO(nft helper).
