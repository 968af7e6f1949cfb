//! The attribute's arguments: `#[service]` or `#[service(queue = "rpc_queue")]`.

use proc_macro2::TokenStream;
use syn::LitStr;

/// What the attribute says.
#[derive(Default)]
pub struct Attr {
    /// The service queue, if set.
    pub queue: Option<LitStr>,
}

/// Parses the arguments, rejecting unknown keys with an error on the key.
pub fn parse(args: TokenStream) -> syn::Result<Attr> {
    let mut attr = Attr::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("queue") {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().is_empty() || lit.value().len() > 255 {
                return Err(syn::Error::new(
                    lit.span(),
                    "the queue name must be 1 to 255 bytes long",
                ));
            }
            attr.queue = Some(lit);
            Ok(())
        } else {
            Err(meta.error("unknown argument; expected `queue = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, args)?;
    Ok(attr)
}
