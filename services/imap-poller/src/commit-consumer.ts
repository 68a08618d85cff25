import { MailArchived } from "@postroom/contracts";
import { DurableConsumer, type Verdict } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import type { MailboxWorkerOptions } from "./mailbox-worker.js";

/**
 * The commit point of one mailbox, shared by the IMAP and POP3 workers: a durable consumer of the
 * archiver's "archived" events for this mailbox, whose handler applies the after-import action.
 */
export function commitConsumer(
  o: Pick<MailboxWorkerOptions, "nc" | "names" | "tenant" | "mailbox">,
  log: Logger,
  handler: (event: MailArchived) => Promise<Verdict>,
): DurableConsumer<MailArchived> {
  return new DurableConsumer({
    nc: o.nc,
    stream: o.names.streams.mail,
    durable: o.names.consumers.pollerCommit(o.tenant.id, o.mailbox.id),
    filterSubject: o.names.subjects.mailArchived(o.tenant.id, o.mailbox.id),
    schema: MailArchived,
    handler,
    // Several in flight: one action held by a replica that crashed (unacked until ackWait) must
    // not hold up every later one. The actions are idempotent, so their order does not matter.
    ackWaitMs: 30_000,
    maxAckPending: 32,
    onProblem: (p) => log.warn({ subject: p.subject, reason: p.reason, action: p.action }, "after-import action deferred"),
  });
}
