//! Rules that need the whole service: method names must not shadow the generated
//! client's own items (the list comes from `expand`, which emits them), and must
//! give distinct request variants.

use std::collections::HashMap;

use crate::ast::{Errors, Service, upper_camel};
use crate::expand;

/// Checks the parsed service.
pub fn check(service: &Service) -> syn::Result<()> {
    let mut errors = Errors::default();
    let mut variants: HashMap<String, &syn::Ident> = HashMap::new();
    for m in &service.methods {
        let name = m.ident.to_string();
        if expand::reserved().any(|r| r == name) {
            errors.push(
                m.ident.span(),
                format!(
                    "method `{name}` collides with `{}Client::{name}`, which #[service] generates; rename the method",
                    service.ident
                ),
            );
        }
        if name.starts_with("__") {
            errors.push(
                m.ident.span(),
                "method names starting with `__` are reserved",
            );
        }
        let variant = upper_camel(&name);
        if let Some(first) = variants.insert(variant.clone(), &m.ident) {
            errors.push(
                m.ident.span(),
                format!(
                    "`{name}` and `{first}` both become the request variant `{variant}`; rename one"
                ),
            );
        }
    }
    errors.finish()
}
