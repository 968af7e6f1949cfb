//! Transactions: `tx.select`, and the publishes, acks and rejects a transactional
//! channel buffers until `tx.commit` applies them (or `tx.rollback` drops them).

use amq_protocol::protocol::{AMQPClass, tx};

use super::{Channel, Ctx, TxOp, unexpected};
use crate::error::AmqpError;

impl Channel {
    /// Applies `tx.select`, `tx.commit` and `tx.rollback`.
    pub(super) fn tx_method(
        &mut self,
        ctx: &Ctx<'_>,
        method: tx::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use AMQPClass as C;
        use tx::AMQPMethod as M;
        match method {
            M::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                self.tx.get_or_insert_with(Vec::new);
                self.reply(ctx, C::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            M::Commit(_) => {
                let Some(ops) = self.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let mut ticket = None;
                for op in ops {
                    match op {
                        TxOp::Publish(p) => ticket = self.route(ctx, *p)?.or(ticket),
                        other => self.apply_ack(ctx, other)?,
                    }
                }
                match ticket {
                    // Persistent messages went to the store: commit-ok once synced.
                    Some(t) => self.commits.push_back(t),
                    None => self.reply(ctx, C::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))),
                }
            }
            M::Rollback(_) => {
                let Some(ops) = self.tx.as_mut() else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                ops.clear();
                self.reply(ctx, C::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
            }
            other => return Err(unexpected(&AMQPClass::Tx(other))),
        }
        Ok(())
    }
}
