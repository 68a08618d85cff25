import { findMailbox, type PostroomConfig } from "@postroom/config";
import { MailArchived, type Names, type SessionOffered } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import { ack, DurableConsumer, jetStreamOf, publishJson, type NatsConnection, type Verdict } from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import { BuiltinDistributor } from "./builtin-distributor.js";
import { route } from "./routing.js";
import { SessionStore } from "./sessions.js";

export interface BridgeOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  pool: Pool;
  logger: Logger;
  tenant?: string;
  clock?: () => number;
}

/** Waits longer than this are handed back to JetStream (nak with delay) instead of held in memory. */
const MAX_HELD_WAIT_MS = 20_000;

/**
 * Turns each archived email into one session and releases it to the tenant's ACD, no faster
 * than the mailbox's pause between new sessions (Softdial's SleepBeforeSendNewIc).
 */
export class AsdBridge {
  #consumer: DurableConsumer<MailArchived> | undefined;
  readonly #sessions: SessionStore;
  readonly distributor = new BuiltinDistributor();
  /** Per mailbox: when the next new session may be released, and a chain that serialises releases. */
  readonly #slots = new Map<string, { next: number; chain: Promise<unknown> }>();
  readonly #js;
  readonly #now: () => number;

  constructor(private readonly o: BridgeOptions) {
    this.#sessions = new SessionStore(o.pool);
    this.#js = jetStreamOf(o.nc);
    this.#now = o.clock ?? Date.now;
  }

  async start(): Promise<void> {
    const { nc, names, tenant } = this.o;
    this.#consumer = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.asdBridgeArchived(tenant),
      filterSubject: names.subjects.wildcard.mailArchived(tenant),
      schema: MailArchived,
      handler: (e) => this.#onArchived(e),
      // Several in hand so one mailbox's pause does not hold up another's.
      maxAckPending: 64,
      ackWaitMs: 5 * 60_000,
      onProblem: (p) => this.o.logger.warn({ subject: p.subject, reason: p.reason, ...(p.error ? errorFields(p.error) : {}) }, "session not offered yet"),
    });
    await this.#consumer.start();
  }

  async stop(): Promise<void> {
    await this.#consumer?.stop();
  }

  async #onArchived(e: MailArchived): Promise<Verdict> {
    const ref = findMailbox(this.o.config, e.tenant, e.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.tenant}/${e.mailbox} is not configured` };
    const decision = route(ref.mailbox, e);
    const log = this.o.logger.child({ tenant: e.tenant, mailbox: e.mailbox, messageKey: e.messageKey });
    if (!decision.offer) {
      log.info({ rule: decision.rule }, "not offered to agents");
      return ack;
    }
    const warnings = e.parseError ? [`The message could not be parsed (${e.parseError}); the original is in the archive.`] : [];
    const session = await this.#sessions.createOrGet({
      tenant: e.tenant,
      mailbox: e.mailbox,
      messageId: e.messageId,
      queue: decision.queue,
      acd: ref.tenant.acd.type,
      warnings,
    });
    if (session.state !== "created") return ack; // offered before: a redelivery or a restart

    const key = `${e.tenant}/${e.mailbox}`;
    const slot = this.#slots.get(key) ?? { next: 0, chain: Promise.resolve() };
    this.#slots.set(key, slot);
    const release = slot.chain.then(async (): Promise<Verdict> => {
      const wait = slot.next - this.#now();
      if (wait > MAX_HELD_WAIT_MS) return { action: "retry", delayMs: wait, reason: "waiting for the pause between new sessions" };
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await this.#offer(session.id, e, decision.queue, ref.tenant.acd.type, warnings);
      slot.next = this.#now() + ref.mailbox.offerPauseSeconds * 1000;
      return ack;
    });
    slot.chain = release.catch(() => undefined);
    return release;
  }

  async #offer(sessionId: string, e: MailArchived, queue: string, acd: "builtin" | "softdial" | "webhook", warnings: string[]): Promise<void> {
    if (acd !== "builtin") {
      // The Softdial and webhook adapters are separate work; until they exist a session for such
      // a tenant stays 'created' and is logged, never silently dropped.
      throw new Error(`the ${acd} ACD adapter is not available in this build; the session waits`);
    }
    const offeredAt = new Date();
    this.distributor.offer({ sessionId, tenant: e.tenant, mailbox: e.mailbox, queue, offeredAt });
    await this.#sessions.transition(sessionId, "offered", { queue, acd });
    const event: SessionOffered = {
      version: "v1",
      sessionId,
      tenant: e.tenant,
      mailbox: e.mailbox,
      messageKey: e.messageKey,
      queue,
      acd,
      offeredAt: offeredAt.toISOString(),
      warnings,
    };
    await publishJson(this.#js, this.o.names.subjects.sessionOffered(e.tenant, e.mailbox), event, { msgId: `${sessionId}#offered` });
    this.o.logger.info({ tenant: e.tenant, mailbox: e.mailbox, sessionId, queue }, "session offered");
  }
}
