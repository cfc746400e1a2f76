//! OpenAPI-only types for what derive attributes cannot say on their own: an address
//! that is IPv4 *or* IPv6, and a port's bounds inside a list. Fields keep their Rust
//! type and point here with `value_type`; nothing of this type is ever built.

use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// An IPv4 or IPv6 address in its usual text form.
pub enum IpAddress {}

impl PartialSchema for IpAddress {
    fn schema() -> RefOr<Schema> {
        let text = |format| {
            ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(format)))
        };
        AnyOfBuilder::new()
            .item(text(KnownFormat::Ipv4))
            .item(text(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address."))
            .examples([serde_json::Value::from("192.0.2.2")])
            .into()
    }
}

impl ToSchema for IpAddress {}

/// A TCP or UDP port, 1-65535.
pub enum Port {}

impl PartialSchema for Port {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(65535))
            .description(Some("A TCP or UDP port, 1-65535."))
            .examples([22])
            .into()
    }
}

impl ToSchema for Port {}

/// A port as the compatibility endpoint reads it: a number, or a string of digits.
pub enum LenientPort {}

impl PartialSchema for LenientPort {
    fn schema() -> RefOr<Schema> {
        let digits = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,5}$"));
        AnyOfBuilder::new()
            .item(Port::schema())
            .item(digits)
            .description(Some("A TCP port, 1-65535, as a number or a string of digits."))
            .into()
    }
}

impl ToSchema for LenientPort {}
