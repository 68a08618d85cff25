import { findMailbox, resolveSecret, type PostroomConfig, type Tenant } from "@postroom/config";
import { MailArchived, type AcdStatus, type Names, type SendRequested, type SessionAssigned, type SessionCompleted, type SessionOffered } from "@postroom/contracts";
import { queryAudit, recordAudit, untilDatabaseAnswers, type Pool } from "@postroom/db";
import { ack, DurableConsumer, jetStreamOf, openKv, publishJson, traceHeaders, whileWorking, type NatsConnection, type Verdict } from "@postroom/nats-kit";
import { errorFields, type Logger, type PostroomMetrics } from "@postroom/telemetry";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { AcdStatusReporter } from "./acd-status.js";
import { AgentApi, type AgentActions } from "./agent-api.js";
import { BuiltinDistributor, DistributionError, type DistributorEvent, type TenantSettings } from "./builtin-distributor.js";
import type { HtmlLimits } from "./html-pool.js";
import { HtmlPool } from "./html-pool.js";
import { ReplyTracker } from "./replies.js";
import { Pacer } from "./pacer.js";
import { route, RoutingConfigError, validateRouting } from "./routing.js";
import { SessionStore, type SessionState } from "./sessions.js";
import { checkArchivedMessage, checkSubject, type EventRefusal } from "./tenant-guard.js";
import { SoftdialAdapter, type DeliveryResult, type SoftdialEvent, type SoftdialOffer } from "./softdial/adapter.js";
import { verify, WebhookDispatcher, type WebhookOffer } from "./webhook.js";

export interface BridgeOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  pool: Pool;
  logger: Logger;
  tenant?: string;
  clock?: () => number;
  /** Environment for agent passwords and the webhook secret (process.env in production). */
  env?: NodeJS.ProcessEnv;
  /** false: no agent API (tests of the pipeline alone). */
  agentApi?: boolean;
  /** Budgets for sanitising emails' HTML (tests shorten them). */
  html?: Partial<HtmlLimits>;
  /** The service's metrics (main.ts); tests of the pipeline alone leave it out. */
  metrics?: PostroomMetrics;
  /** Softdial connection timers (tests shorten them). */
  softdial?: { heartbeatSeconds?: number; backoff?: { initialMs: number; maxMs: number; stableMs: number } };
  /** How often the ACD status re-reads the unanswered count from PostgreSQL (default 5 s). */
  statusRefreshMs?: number;
}

/** Waits longer than this are handed back to JetStream (nak with delay) instead of held in memory. */
const MAX_HELD_WAIT_MS = 20_000;
/** The archived-event consumer's ack wait: how soon a crashed bridge's emails are offered again. */
const ARCHIVED_ACK_WAIT_MS = 30_000;
/** How long an ACD's signed link to an email stays valid. */
const EMAIL_LINK_TTL_S = 24 * 3600;

/**
 * Turns each archived email into one session and releases it to the tenant's ACD — the
 * built-in distributor, Softdial CallGem (SDMP) or a webhook — no faster than the mailbox's
 * pause between new sessions (Softdial's SleepBeforeSendNewIc), and serves the agent API.
 */
export class AsdBridge implements AgentActions {
  #consumer: DurableConsumer<MailArchived> | undefined;
  readonly #sessions: SessionStore;
  readonly distributor: BuiltinDistributor;
  readonly softdial = new Map<string, SoftdialAdapter>();
  readonly #webhooks = new Map<string, { dispatcher: WebhookDispatcher; secret: string }>();
  /** Per tenant: the ACD status `postroom status` shows. */
  readonly #status = new Map<string, AcdStatusReporter>();
  /** Unanswered sessions the requeue policy offers again, and when. */
  readonly #requeues = new Map<string, { tenant: string; at: number }>();
  #refresh: NodeJS.Timeout | undefined;
  api: AgentApi | undefined;
  #replies: ReplyTracker | undefined;
  /** Per mailbox: the pause between new sessions, for new and re-offered ones alike. */
  readonly #pacer: Pacer;
  /** Per tenant and agent CallGem named: refusals so far (the first one is logged). */
  readonly #refusals = new Map<string, number>();
  /** Session state writes, in the order the ACDs reported them. */
  #writes: Promise<unknown> = Promise.resolve();
  #tick: NodeJS.Timeout | undefined;
  readonly #js;
  readonly #now: () => number;
  /** Counters for the metrics work. */
  readonly stats = { offered: 0, notOffered: 0, completed: 0, failed: 0, unanswered: 0, requeued: 0, refused: 0 };

  constructor(private readonly o: BridgeOptions) {
    this.#sessions = new SessionStore(o.pool);
    this.#js = jetStreamOf(o.nc);
    this.#now = o.clock ?? Date.now;
    this.#pacer = new Pacer(this.#now);
    const tenants: Record<string, TenantSettings> = {};
    for (const t of this.#tenants()) {
      tenants[t.id] = {
        reservationSeconds: t.reservationSeconds,
        queues: Object.fromEntries(t.queues.map((q) => [q.id, { timeoutSeconds: q.timeoutSeconds, overflow: q.overflow }])),
        agents: t.agents.map((a) => ({ id: a.id, maxSessions: a.maxSessions })),
      };
    }
    this.distributor = new BuiltinDistributor({ tenants, clock: this.#now, onEvent: (e) => this.#record(() => this.#onDistributor(e)) });
  }

  async start(): Promise<void> {
    const problems = validateRouting({ tenants: this.#tenants() });
    if (problems.length) throw new RoutingConfigError(problems);
    const { nc, names, tenant } = this.o;
    const kv = await openKv(nc, names.buckets.acdStatus, { replicas: this.o.config.nats.replicas });
    for (const t of this.#tenants()) {
      const status = new AcdStatusReporter({ tenant: t.id, acd: t.acd.type, alertAfterSeconds: t.unanswered.alertAfterSeconds, kv, names, logger: this.o.logger, clock: this.#now });
      this.#status.set(t.id, status);
      if (t.acd.type === "softdial") {
        const acd = t.acd;
        const adapter = new SoftdialAdapter({
          host: acd.host,
          port: acd.port,
          switchId: acd.switchId,
          encoding: acd.encoding ?? (acd.port === 6500 ? "utf16le" : "ascii"),
          causes: acd.causes,
          ackTimeoutMs: acd.ackTimeoutSeconds * 1000,
          ...(this.o.softdial?.heartbeatSeconds !== undefined ? { heartbeatSeconds: this.o.softdial.heartbeatSeconds } : {}),
          ...(this.o.softdial?.backoff ? { backoff: this.o.softdial.backoff } : {}),
          ...(this.o.config.logs.path ? { transcriptDir: this.o.config.logs.path, transcriptPrefix: `softdial-${t.id}` } : {}),
          deliver: async (sessionId, agent) => this.#softdialDeliver(t, sessionId, agent),
          // Re-offers after a reconnect or restart wait for the mailbox's pause like new sessions.
          pace: async (offer, send) => void (await this.#pacer.run(`${t.id}/${offer.mailbox ?? ""}`, this.#pauseMs(t, offer.mailbox), send)),
          onEvent: (e) => this.#record(() => this.#onSoftdial(t.id, e)),
        });
        this.softdial.set(t.id, adapter);
      }
      if (t.acd.type === "webhook") {
        const acd = t.acd;
        const secret = await resolveSecret(acd.signingSecret, this.o.env ?? process.env);
        const log = this.o.logger.child({ tenant: t.id, acd: "webhook" });
        const dispatcher = new WebhookDispatcher({
          url: acd.url,
          secret,
          concurrency: acd.concurrency,
          initialDelayMs: acd.retry.initialDelaySeconds * 1000,
          maxDelayMs: acd.retry.maxDelaySeconds * 1000,
          timeoutMs: acd.retry.timeoutSeconds * 1000,
          clock: this.#now,
          pauseMs: (mailbox) => this.#pauseMs(t, mailbox),
          onAccepted: (offer, attempts) => this.#record(() => this.#webhookAccepted(t, offer, attempts)),
          onRefused: (offer, code) => this.#record(() => this.#unanswered(t.id, offer.sessionId, "refused", { status: code })),
          onState: (state, error) => {
            status.state(state, error);
            if (state === "unreachable") {
              this.o.metrics?.acdUnreachable(t.id, "webhook");
              log.error({ problem: error?.message, held: dispatcher.backlog }, "the webhook ACD is unreachable; offers are held back until it answers");
            } else log.info({ held: dispatcher.backlog }, "the webhook ACD answers again; held-back offers go out");
          },
          onFailure: (reason) => this.o.metrics?.acdOfferFailed(t.id, "webhook", reason),
          onHeldBack: (n) => status.heldBack(n),
        });
        this.#webhooks.set(t.id, { secret, dispatcher });
      }
    }
    // Nothing to serve without agents or a webhook ACD; not binding the port then also keeps
    // deployments (and test worlds) without agents free of port clashes.
    const needed = this.#tenants().some((t) => t.agents.length > 0 || t.acd.type === "webhook");
    if (this.o.agentApi !== false && !needed) this.o.logger.info("agent API not started: no agents and no webhook ACD configured");
    if (this.o.agentApi !== false && needed) {
      // Agents' replies are followed to their outcome (mail.sent / mail.send-failed) for the desktop.
      this.#replies = new ReplyTracker({
        nc,
        names,
        pool: this.o.pool,
        logger: this.o.logger.child({ component: "replies" }),
        onRefused: (r, subject, e) => void this.#refuseEvent(r, subject, e),
        ...(tenant ? { tenant } : {}),
      });
      await this.#replies.start();
      this.api = new AgentApi({
        config: this.o.config,
        store: this.#sessions,
        actions: this,
        logger: this.o.logger.child({ component: "agent-api" }),
        host: this.o.config.agentApi.host,
        port: this.o.config.agentApi.port,
        replies: this.#replies,
        html: new HtmlPool(this.o.html),
        clock: this.#now,
        audit: { record: (e) => recordAudit(this.o.pool, e), query: (q) => queryAudit(this.o.pool, q) },
        ...(this.o.env ? { env: this.o.env } : {}),
      });
      await this.api.start();
      this.o.logger.info({ url: this.api.url, allowedHosts: this.api.allowedHosts }, "agent API listening");
    }
    // After the API (webhook offers carry links to it), before new mail (so nothing is offered twice).
    await this.#restore();
    for (const a of this.softdial.values()) a.start();
    this.#tick = setInterval(() => {
      this.distributor.tick();
      this.#dueRequeues();
    }, 250);
    this.#refresh = setInterval(() => void this.#refreshStatus(), this.o.statusRefreshMs ?? 5000);
    await this.#refreshStatus();
    this.#consumer = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.asdBridgeArchived(tenant),
      filterSubject: names.subjects.wildcard.mailArchived(tenant),
      schema: MailArchived,
      // Kept while it waits for its mailbox's pause (up to MAX_HELD_WAIT_MS) by telling JetStream
      // it is still in hand, so the ack wait can be short: a bridge killed with emails in hand
      // gets them offered again within 30 s. (With a 5-minute ack wait the chaos run's settle
      // ended before the emails a killed bridge held came back.)
      handler: (e, msg) => whileWorking(msg, ARCHIVED_ACK_WAIT_MS, () => this.#onArchived(e, msg.subject)),
      // Several in hand so one mailbox's pause does not hold up another's.
      maxAckPending: 64,
      ackWaitMs: ARCHIVED_ACK_WAIT_MS,
      onProblem: (p) => this.o.logger.warn({ subject: p.subject, reason: p.reason, ...(p.error ? errorFields(p.error) : {}) }, "session not offered yet"),
    });
    await this.#consumer.start();
  }

  /** Stops taking new mail first, then the API, then the ACD connections, then lets pending writes land. */
  async stop(): Promise<void> {
    await this.#consumer?.stop();
    await this.api?.stop();
    await this.#replies?.stop();
    clearInterval(this.#tick);
    clearInterval(this.#refresh);
    // Offers in flight are dropped, not lost: their sessions stay offered and the next start offers them again.
    for (const w of this.#webhooks.values()) w.dispatcher.stop();
    for (const a of this.softdial.values()) await a.stop();
    await this.#writes.catch(() => undefined);
    for (const st of this.#status.values()) {
      st.state("stopped");
      await st.flush();
    }
  }

  /** Every tenant's ACD status as it is now (the metrics read it at scrape time). */
  acdStatuses(): AcdStatus[] {
    return [...this.#status.values()].map((s) => s.snapshot());
  }

  /** The reporter of a tenant's ACD status, for the adapters to report problems into. */
  acdStatus(tenant: string): AcdStatusReporter | undefined {
    return this.#status.get(tenant);
  }

  async #refreshStatus(): Promise<void> {
    for (const [tenant, st] of this.#status) {
      try {
        const u = await this.#sessions.unansweredSummary(tenant);
        st.unanswered(u.count, u.oldestAt);
      } catch (error) {
        this.o.logger.warn({ tenant, problem: (error as Error).message }, "unanswered sessions not counted");
      }
    }
  }

  /** Resolves when every state change reported so far is in PostgreSQL. */
  async settled(): Promise<void> {
    await this.#writes;
  }

  #tenants(): Tenant[] {
    return this.o.config.tenants.filter((t) => this.o.tenant === undefined || t.id === this.o.tenant);
  }

  /**
   * Puts sessions released before a restart back where they were: distributor queues (also the
   * ones the fallback policy handed there), CallGem, the webhook ACD; unanswered ones wait for
   * their requeue time again.
   */
  async #restore(): Promise<void> {
    for (const t of this.#tenants()) {
      // At start, just after the migrations: a database that stops here is waited for.
      for (const s of await untilDatabaseAnswers(() => this.#sessions.unfinished(t.id))) {
        const session = { sessionId: s.id, tenant: t.id, mailbox: s.mailbox, queue: s.queue, offeredAt: s.offered_at ?? new Date() };
        if (s.state === "unanswered") {
          // Interrupted between "unanswered" and its requeue or fallback: carried on now.
          this.#requeues.set(s.id, { tenant: t.id, at: s.requeue_at?.getTime() ?? this.#now() });
        } else if (t.acd.type === "builtin" || s.acd === "builtin") {
          if (s.state === "delivered" && s.agent) this.distributor.restoreDelivered(session, s.agent);
          else this.distributor.offer(session);
        } else if (t.acd.type === "softdial") {
          // CallGem forgot every session with our old socket: each is offered again on connect,
          // the ones an agent has with HE naming her (see the adapter).
          const offer = await this.#softdialOffer(t, s.id, s.mailbox);
          if (offer && s.state === "delivered" && s.agent) this.softdial.get(t.id)!.restoreDelivered(offer, s.agent);
          else if (offer) this.softdial.get(t.id)!.offer(offer, { offeredBefore: s.announced_at !== null });
        } else if (t.acd.type === "webhook" && s.state === "offered" && s.announced_at === null) {
          // Recorded as offered but never taken by the ACD (held back while it was down, or the
          // process died before its 2xx was recorded): offered again. The ACD dedupes on
          // Idempotency-Key (the session id) in case the last POST did land. One it took is not
          // offered again: a restart must not double every open session at the ACD.
          await this.#webhookEnqueue(t, s.id);
        }
      }
    }
  }

  async #onArchived(e: MailArchived, subject: string): Promise<Verdict> {
    // Defence in depth beside the bus permissions: the subject says whose email this is, and the
    // payload (its tenant, mailbox and message row) must agree, or nothing is offered to anyone.
    const refusal = checkSubject(this.o.names.subjects.mailArchived, subject, e) ?? (await checkArchivedMessage(this.o.pool, e));
    if (refusal) return this.#refuseEvent(refusal, subject, e);
    const ref = findMailbox(this.o.config, e.tenant, e.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.tenant}/${e.mailbox} is not configured` };
    const decision = route(ref.mailbox, e, ref.tenant.classification);
    const log = this.o.logger.child({ tenant: e.tenant, mailbox: e.mailbox, messageKey: e.messageKey });
    if (!decision.offer) {
      this.stats.notOffered++;
      log.info({ rule: decision.rule }, "not offered to agents");
      return ack;
    }
    const warnings = [
      ...(e.parseError ? [`The message could not be parsed (${e.parseError}); the original is in the archive.`] : []),
      ...(decision.flag ? [decision.flag] : []),
    ];
    const session = await this.#sessions.createOrGet({
      tenant: e.tenant,
      mailbox: e.mailbox,
      messageId: e.messageId,
      queue: decision.queue,
      acd: ref.tenant.acd.type,
      warnings,
      // The consumer runs this handler inside the archived event's trace.
      ...pick(traceHeaders(), "traceparent"),
    });
    if (session.state !== "created") return ack; // offered before: a redelivery or a restart

    // A webhook tenant's dispatcher paces its POSTs itself (new, retried and held-back offers
    // alike) without holding a worker while it waits; pacing here as well would cost two pauses.
    if (ref.tenant.acd.type === "webhook") {
      await this.#offer(session.id, e, decision.queue, ref.tenant, warnings);
      return ack;
    }
    const turn = await this.#pacer.run(`${e.tenant}/${e.mailbox}`, ref.mailbox.offerPauseSeconds * 1000, () => this.#offer(session.id, e, decision.queue, ref.tenant, warnings), MAX_HELD_WAIT_MS);
    if (!turn.ran) return { action: "retry", delayMs: turn.waitMs, reason: "waiting for the pause between new sessions" };
    return ack;
  }

  /** Terminates an event the tenant guard refused: logged with both sides, counted, never retried or offered. */
  #refuseEvent(r: EventRefusal, subject: string, e: { tenant: string; mailbox: string }): Verdict {
    this.stats.refused++;
    const tenant = r.addressed?.tenant ?? e.tenant;
    this.o.metrics?.eventRefused(tenant, r.reason);
    this.o.logger.error({ subject, named: `${e.tenant}/${e.mailbox}`, reason: r.reason, problem: r.detail }, "event refused: it names another tenant, mailbox or message than its subject");
    return { action: "term", reason: r.detail };
  }

  #pauseMs(tenant: Tenant, mailbox: string | undefined): number {
    return (tenant.mailboxes.find((m) => m.id === mailbox)?.offerPauseSeconds ?? 0) * 1000;
  }

  async #offer(sessionId: string, e: MailArchived, queue: string, tenant: Tenant, warnings: string[]): Promise<void> {
    const acd = tenant.acd.type;
    const offeredAt = new Date(this.#now());
    // Recorded before the ACD hears of it, so that an ACD's quick answer finds the row offered.
    await this.#sessions.transition(sessionId, "offered", { queue, acd });
    if (acd === "builtin") {
      this.distributor.offer({ sessionId, tenant: e.tenant, mailbox: e.mailbox, queue, offeredAt });
    } else if (acd === "softdial") {
      // session.offered is published when the IC is on a live socket (the adapter's "offered"),
      // not now: while CallGem is unreachable nothing has been offered yet.
      const offer = await this.#softdialOffer(tenant, sessionId, e.mailbox);
      if (offer) this.softdial.get(tenant.id)!.offer(offer);
      return;
    } else {
      // Handed to the dispatcher, not awaited: the POST (and its retries, for as long as the ACD
      // is down) must not hold up this mailbox's next email. session.offered follows when the
      // ACD takes it (#webhookAccepted).
      await this.#webhookEnqueue(tenant, sessionId);
      return;
    }
    await this.#publishOffered({ sessionId, tenant: e.tenant, mailbox: e.mailbox, messageKey: e.messageKey, queue, acd, offeredAt, warnings });
  }

  async #publishOffered(s: { sessionId: string; tenant: string; mailbox: string; messageKey: string; queue: string; acd: Tenant["acd"]["type"]; offeredAt: Date; warnings: string[] }): Promise<void> {
    // Announced once, whatever reconnects and restarts did in between.
    if (!(await this.#sessions.markAnnounced(s.sessionId))) return;
    this.stats.offered++;
    const event: SessionOffered = { version: "v1", sessionId: s.sessionId, tenant: s.tenant, mailbox: s.mailbox, messageKey: s.messageKey, queue: s.queue, acd: s.acd, offeredAt: s.offeredAt.toISOString(), warnings: s.warnings };
    await publishJson(this.#js, this.o.names.subjects.sessionOffered(s.tenant, s.mailbox), event, { msgId: `${s.sessionId}#offered` });
    this.o.logger.info({ tenant: s.tenant, mailbox: s.mailbox, sessionId: s.sessionId, queue: s.queue }, "session offered");
  }

  /** The one place a webhook offer is built: from the session's row, for a first offer, a restart or a requeue. */
  async #webhookOffer(tenant: Tenant, sessionId: string): Promise<WebhookOffer | undefined> {
    const hook = this.#webhooks.get(tenant.id)!;
    const row = await this.#sessions.forAgent(tenant.id, sessionId);
    if (!row) return undefined;
    return {
      version: "v1",
      type: "session.offered",
      sessionId,
      offerNumber: await this.#sessions.offerNumber(sessionId),
      tenant: tenant.id,
      mailbox: row.mailbox,
      queue: row.queue,
      from: row.from_address,
      subject: row.subject,
      offeredAt: (row.offered_at ?? new Date(this.#now())).toISOString(),
      emailUrl: this.#emailLink(tenant.id, sessionId, hook.secret),
      warnings: row.warnings,
    };
  }

  async #webhookEnqueue(tenant: Tenant, sessionId: string): Promise<void> {
    const offer = await this.#webhookOffer(tenant, sessionId);
    if (offer) this.#webhooks.get(tenant.id)!.dispatcher.enqueue(offer);
  }

  /** The webhook ACD took an offer: session.offered is published the first time only (a requeue or restart re-offer is not a new session). */
  async #webhookAccepted(tenant: Tenant, offer: WebhookOffer, attempts: number): Promise<void> {
    const key = await this.o.pool.query<{ message_key: string }>("SELECT m.message_key FROM sessions s JOIN messages m ON m.id = s.message_id WHERE s.id = $1", [offer.sessionId]);
    const row = key.rows[0];
    if (!row) return;
    if (attempts > 1) this.o.logger.info({ tenant: tenant.id, sessionId: offer.sessionId, attempts }, "the webhook ACD took the offer after retries");
    await this.#publishOffered({ sessionId: offer.sessionId, tenant: tenant.id, mailbox: offer.mailbox, messageKey: row.message_key, queue: offer.queue, acd: "webhook", offeredAt: new Date(offer.offeredAt), warnings: offer.warnings });
  }

  // --- the unanswered policy -------------------------------------------------------------------

  /**
   * The ACD (CallGem, the webhook ACD or the built-in distributor) let a session go without an
   * agent handling it. Never `completed`: it is recorded as unanswered (counted, shown in
   * `postroom status` and the supervisor view, alerted on by age) and the tenant's policy decides:
   * `requeue` offers it to the same ACD again after `requeueAfterSeconds`, `fallback` hands it to
   * the built-in distributor's queue (the tenant's agents take it in the desktop), `close` ends it
   * as `closed`. A session that has already ended is left alone.
   */
  async #unanswered(tenant: string, sessionId: string, reason: string, detail: Record<string, unknown> = {}): Promise<void> {
    const t = this.#tenants().find((x) => x.id === tenant);
    if (!t) return;
    const policy = t.unanswered;
    this.#webhooks.get(tenant)?.dispatcher.cancel(sessionId);
    const requeueAt = policy.policy === "requeue" ? new Date(this.#now() + policy.requeueAfterSeconds * 1000) : null;
    const recorded = await this.#sessions.markUnanswered(sessionId, { state: policy.policy === "close" ? "closed" : "unanswered", reason: reason.slice(0, 200), policy: policy.policy, requeueAt, detail });
    if (!recorded) return;
    const acd = await this.#acdOfSession(sessionId, t);
    this.stats.unanswered++;
    this.o.metrics?.sessionUnanswered(tenant, acd, reason, policy.policy);
    this.o.logger.warn({ tenant, sessionId, acd, reason, policy: policy.policy, ...(requeueAt ? { requeueAt: requeueAt.toISOString() } : {}) }, "email unanswered: the ACD let it go without an agent");
    if (policy.policy === "requeue") this.#requeues.set(sessionId, { tenant, at: requeueAt!.getTime() });
    if (policy.policy === "fallback") await this.#fallback(t, sessionId);
    const u = await this.#sessions.unansweredSummary(tenant);
    this.#status.get(tenant)?.unanswered(u.count, u.oldestAt);
  }

  /** The ACD a session is with now: the tenant's, or the built-in distributor after a fallback. */
  async #acdOfSession(sessionId: string, t: Tenant): Promise<string> {
    const r = await this.o.pool.query<{ acd: string }>("SELECT acd FROM sessions WHERE id = $1", [sessionId]);
    return r.rows[0]?.acd ?? t.acd.type;
  }

  /** The fallback policy: into the built-in distributor's queue, for the tenant's own agents. */
  async #fallback(t: Tenant, sessionId: string): Promise<void> {
    const row = (await this.o.pool.query<{ mailbox: string; queue: string }>("SELECT mailbox, queue FROM sessions WHERE id = $1", [sessionId])).rows[0];
    if (!row) return;
    const queue = t.unanswered.fallbackQueue ?? row.queue;
    if (!(await this.#sessions.transition(sessionId, "offered", { fallback: true, queue, acd: "builtin" }, { queue, acd: "builtin" }))) return;
    this.distributor.offer({ sessionId, tenant: t.id, mailbox: row.mailbox, queue, offeredAt: new Date(this.#now()) });
  }

  /** Requeues whose delay ran out: offered to the tenant's ACD again (or the fallback, if that is the policy now). */
  #dueRequeues(): void {
    const now = this.#now();
    for (const [sessionId, r] of this.#requeues) {
      if (r.at > now) continue;
      this.#requeues.delete(sessionId);
      this.#record(() => this.#reoffer(r.tenant, sessionId));
    }
  }

  async #reoffer(tenant: string, sessionId: string): Promise<void> {
    const t = this.#tenants().find((x) => x.id === tenant);
    const row = (await this.o.pool.query<{ state: string; mailbox: string; queue: string; acd: string }>("SELECT state, mailbox, queue, acd FROM sessions WHERE id = $1", [sessionId])).rows[0];
    if (!t || row?.state !== "unanswered") return;
    if (t.unanswered.policy === "fallback") return this.#fallback(t, sessionId);
    const acd = row.acd === "builtin" ? "builtin" : t.acd.type;
    if (!(await this.#sessions.transition(sessionId, "offered", { requeued: true, queue: row.queue, acd }))) return;
    this.stats.requeued++;
    this.o.logger.info({ tenant, sessionId, queue: row.queue, acd }, "unanswered email offered again");
    if (acd === "webhook") return this.#webhookEnqueue(t, sessionId); // its dispatcher paces
    const offer = acd === "softdial" ? await this.#softdialOffer(t, sessionId, row.mailbox) : undefined;
    // A re-offer is a new session to the ACD: it waits for the mailbox's pause like one, without
    // holding up the state writes queued behind this one.
    void this.#pacer.run(`${tenant}/${row.mailbox}`, this.#pauseMs(t, row.mailbox), () => {
      if (acd === "builtin") this.distributor.offer({ sessionId, tenant, mailbox: row.mailbox, queue: row.queue, offeredAt: new Date(this.#now()) });
      else if (offer) this.softdial.get(tenant)!.offer(offer, { offeredBefore: true });
    });
  }

  // --- state changes reported by the ACDs ------------------------------------------------------

  /**
   * Records a state change the ACD has already made (in memory, or on the far side of a protocol),
   * in order. A database that is down is waited for, not skipped: the ACD will not report the
   * change again, so a dropped write left the row behind for good — found by the chaos run, a
   * session closed by its agent while PostgreSQL was stopped stayed "delivered" in the table, and
   * every later close was refused because the distributor no longer held it. Each write is one
   * statement (or an idempotent step), so running it again after an outage is safe.
   */
  #record(apply: () => Promise<unknown>): void {
    this.#writes = this.#writes
      .then(() => untilDatabaseAnswers(apply, (error, attempt) => {
        if (attempt === 1) this.o.logger.warn({ problem: (error as Error)?.message ?? String(error) }, "database unavailable; session state change held until it answers");
      }))
      .catch((error: unknown) => this.o.logger.error({ problem: (error as Error).message }, "session state not recorded"));
  }

  async #onDistributor(e: DistributorEvent): Promise<void> {
    const s = this.#sessions;
    switch (e.type) {
      case "queued":
        await s.transition(e.sessionId, "queued", { queue: e.queue }, { agent: null });
        return;
      case "assigned":
        await s.transition(e.sessionId, "assigned", { queue: e.queue, reservedUntil: new Date(e.reservedUntil).toISOString() }, { agent: e.agent });
        await this.#published(e.sessionId, "assigned", e.agent, e.queue, `${e.reservedUntil}`);
        return;
      case "delivered":
        await s.transition(e.sessionId, "delivered", {}, { agent: e.agent });
        return;
      case "reservation-expired":
        await s.transition(e.sessionId, "queued", { reason: "reservation expired", agent: e.agent }, { agent: null });
        return;
      case "timed-out":
        await s.transition(e.sessionId, "timed-out", { from: e.from, to: e.queue }, { queue: e.queue, agent: null });
        return;
      case "unanswered":
        await this.#unanswered(e.tenant, e.sessionId, e.reason, { queue: e.queue });
        return;
      case "transferred":
        await s.transition(e.sessionId, "transferred", { from: e.from, to: e.to }, { agent: null, queue: e.queue });
        return;
      case "completed":
        await s.transition(e.sessionId, "completed", { outcome: e.outcome }, { outcome: e.outcome });
        await this.#published(e.sessionId, "completed", e.agent, e.outcome);
        return;
    }
  }

  async #onSoftdial(tenant: string, e: SoftdialEvent): Promise<void> {
    const s = this.#sessions;
    const log = this.o.logger.child({ tenant, acd: "softdial" });
    switch (e.type) {
      case "offered": {
        if (e.reoffer || e.held) {
          log.debug({ sessionId: e.sessionId, connection: e.connection, held: e.held }, "session offered again after a reconnect");
          return;
        }
        const row = await s.forAgent(tenant, e.sessionId);
        if (!row) return;
        await this.#publishOffered({ sessionId: e.sessionId, tenant, mailbox: row.mailbox, messageKey: row.message_key, queue: row.queue, acd: "softdial", offeredAt: new Date(this.#now()), warnings: row.warnings });
        return;
      }
      case "queued":
        await s.transition(e.sessionId, "queued", { queue: e.queue, timeoutSeconds: e.timeoutSeconds }, { ...(e.queue ? { queue: e.queue } : {}), agent: null });
        return;
      case "queue-timeout":
        log.info({ sessionId: e.sessionId, queue: e.queue }, "queue timer ran out; QT sent");
        return;
      case "assigned":
        await s.transition(e.sessionId, "assigned", { endpoint: e.endpoint }, { agent: e.agent });
        await this.#published(e.sessionId, "assigned", e.agent, "", e.endpoint);
        return;
      case "delivery-failed": {
        this.o.metrics?.softdialRefusal(tenant, e.reason);
        const key = `${tenant}\u0000${e.agent}\u0000${e.reason}`;
        const n = (this.#refusals.get(key) ?? 0) + 1;
        this.#refusals.set(key, n);
        // Once per agent and reason: CallGem may offer the same agent again every second.
        if (n === 1) log.warn({ sessionId: e.sessionId, agent: e.agent, reason: e.reason, problem: e.message }, "refused a CallGem transfer (TS RS2)");
        if (e.reason === "unknown-agent") {
          this.#acdProblem(tenant, {
            kind: "unknown-agent",
            subject: e.agent,
            detail: `CallGem transfers sessions to agent ${e.agent}, who has no account in Postroom; each is refused (TS RS2) and stays queued`,
            fix: `add agent ${e.agent} under tenants[${tenant}].agents, or remove the agent from the email queue in CallGem`,
          });
        }
        if (e.reason !== "agent-busy" && e.reason !== "held-by-another-agent") await s.transition(e.sessionId, "queued", { reason: e.message, refusal: e.reason, agent: e.agent }, { agent: null });
        return;
      }
      case "unanswered":
        await this.#unanswered(tenant, e.sessionId, e.reason);
        return;
      case "completed":
        // CallGem ended a session no agent had (CD after a queue timeout without overflow, an
        // abandon): that is not a completed email.
        if (e.agent === null) return this.#unanswered(tenant, e.sessionId, e.outcome);
        await s.transition(e.sessionId, "completed", { outcome: e.outcome }, { outcome: e.outcome });
        await this.#published(e.sessionId, "completed", e.agent, e.outcome);
        return;
      case "rejected":
        log.error({ sessionId: e.sessionId, code: e.code, frame: e.frame, problem: e.message }, "Softdial rejected a frame");
        // Only a refused IC means CallGem never took the session; a refused TS, QT, ND or SD
        // leaves the email where it is (with its agent, or in the queue). A refused IC is not the
        // end of the email either: no agent had it, so it is unanswered (requeued, handed to the
        // fallback queue or closed, by policy), and the refusal stands in the ACD status for an
        // administrator, since the same IC will most likely be refused again until they act.
        if (e.sessionId && e.frame === "IC") {
          this.#acdProblem(tenant, {
            kind: "rejected-offer",
            subject: `ER ${e.code}`,
            detail: `CallGem refused an IC with ER ${e.code}${e.message ? ` (${e.message})` : ""}`,
            fix: "read the refused frame in the Softdial transcript (logs.path); ER 30 means the campaign does not exist in CallGem, ER 120 a session without SI and TN",
          });
          await this.#unanswered(tenant, e.sessionId, "rejected", { code: e.code, ...(e.message ? { message: e.message } : {}) });
        }
        return;
      case "unacknowledged":
        this.o.metrics?.softdialUnacknowledged(tenant, e.code);
        log.error({ sessionId: e.sessionId, message: e.code, token: e.token, seconds: e.seconds }, "CallGem did not acknowledge a frame (no MV)");
        this.#acdProblem(tenant, {
          kind: "unacknowledged-frame",
          subject: e.code,
          detail: `CallGem did not acknowledge ${e.code} frames (MV for their TK) within ${e.seconds} s`,
          fix: "check the controller's health and the network between asd-bridge and CallGem; the transcript in logs.path shows the frames",
        });
        return;
      case "connected":
        this.#acdState(tenant, "connected");
        log.info({ connection: e.connection, toReoffer: e.toReoffer, held: e.held }, "connected to Softdial CallGem");
        return;
      case "resynced":
        log.info({ connection: e.connection, reoffered: e.reoffered, held: e.held }, "sessions offered again to Softdial CallGem after connecting");
        return;
      case "disconnected":
        this.#acdState(tenant, "connecting", { message: `Softdial CallGem connection lost (${e.reason})`, fix: "asd-bridge reconnects by itself; if it stays so, check the controller and acd.host/port" });
        log.warn({ connection: e.connection, reason: e.reason }, "Softdial connection lost; reconnecting");
        return;
      case "connect-failed":
        this.#acdState(tenant, "unreachable", { message: `cannot connect to Softdial CallGem (${e.reason})`, fix: "check that CallGem runs and that acd.host/acd.port name its media-layer port (6502 ASCII, 6500 UTF-16LE)" });
        // Once, then every tenth attempt: the backoff tries for as long as it takes.
        if (e.attempt === 1 || e.attempt % 10 === 0) log.error({ attempt: e.attempt, problem: e.reason, retryInMs: e.retryInMs }, "cannot connect to Softdial CallGem; sessions wait");
        return;
      default:
        return;
    }
  }

  /** A configuration or protocol problem for `postroom status` (the tenant's ACD status record). */
  #acdProblem(tenant: string, p: { kind: string; subject: string; detail: string; fix: string }): void {
    this.#status.get(tenant)?.problem(p);
  }

  /** The ACD's connection state for `postroom status`. */
  #acdState(tenant: string, state: "connected" | "connecting" | "unreachable", error?: { message: string; fix: string }): void {
    this.#status.get(tenant)?.state(state, error);
  }

  async #softdialDeliver(tenant: Tenant, sessionId: string, agent: string): Promise<DeliveryResult> {
    // The agent CallGem chose must exist here, so that the desktop can show the email.
    if (!tenant.agents.some((a) => a.id === agent)) return { refused: "unknown-agent", message: `agent ${agent} has no account in Postroom` };
    await this.#writes;
    if (await this.#sessions.transition(sessionId, "delivered", { via: "softdial" }, { agent })) return true;
    return { refused: "delivery-error", message: "the session is no longer open" };
  }

  async #softdialOffer(tenant: Tenant, sessionId: string, mailboxId: string): Promise<SoftdialOffer | undefined> {
    const mailbox = tenant.mailboxes.find((m) => m.id === mailboxId);
    const row = await this.#sessions.forAgent(tenant.id, sessionId);
    if (!mailbox || !row) return undefined;
    // DT: the reference (tenant and session id name the archived original, byte for byte) and
    // the subject as a summary; the codec escapes and, past 128,000 characters, cuts it.
    return { sessionId, mailbox: mailboxId, from: row.from_address ?? "", to: mailbox.address, reference: `postroom ${tenant.id} ${sessionId} ${row.subject ?? ""}` };
  }

  async #published(sessionId: string, kind: "assigned" | "completed", agent: string | null, detail: string, unique = ""): Promise<void> {
    const row = await this.o.pool.query<{ tenant: string; mailbox: string; queue: string }>("SELECT tenant, mailbox, queue FROM sessions WHERE id = $1", [sessionId]);
    const s = row.rows[0];
    if (!s) return;
    const at = new Date(this.#now()).toISOString();
    if (kind === "assigned") {
      const event: SessionAssigned = { version: "v1", sessionId, tenant: s.tenant, mailbox: s.mailbox, queue: detail || s.queue, agent: agent ?? "", assignedAt: at };
      await publishJson(this.#js, this.o.names.subjects.sessionAssigned(s.tenant, s.mailbox), event, { msgId: `${sessionId}#assigned#${agent}#${unique}` });
    } else {
      this.stats.completed++;
      const event: SessionCompleted = { version: "v1", sessionId, tenant: s.tenant, mailbox: s.mailbox, agent, outcome: detail, completedAt: at };
      await publishJson(this.#js, this.o.names.subjects.sessionCompleted(s.tenant, s.mailbox), event, { msgId: `${sessionId}#completed` });
    }
  }

  // --- AgentActions: what the agent API may do -------------------------------------------------

  #acdOf(tenant: string): string {
    return this.o.config.tenants.find((t) => t.id === tenant)?.acd.type ?? "builtin";
  }

  /** The built-in distributor holds the session: a built-in tenant's, or one the fallback policy handed over. */
  #distributed(tenant: string, sessionId: string): boolean {
    return this.#acdOf(tenant) === "builtin" || this.distributor.holder(sessionId)?.tenant === tenant;
  }

  async accept(tenant: string, agent: string, sessionId: string): Promise<void> {
    if (this.#distributed(tenant, sessionId)) this.distributor.accept(tenant, agent, sessionId);
    else await this.#sessions.transition(sessionId, "delivered", { via: "agent" }, { agent });
    await this.settled();
  }

  async close(tenant: string, agent: string, sessionId: string, outcome: string): Promise<void> {
    if (this.#distributed(tenant, sessionId)) this.distributor.close(tenant, agent, sessionId, outcome);
    else {
      // The ACD learns of it (ND for Softdial; the webhook ACD reported or will report completion).
      const softdial = this.softdial.get(tenant);
      if (softdial?.has(sessionId)) softdial.close(sessionId, outcome);
      else this.#record(async () => {
        await this.#sessions.transition(sessionId, "completed", { outcome, by: agent }, { outcome });
        await this.#published(sessionId, "completed", agent, outcome);
      });
    }
    await this.settled();
  }

  async transfer(tenant: string, agent: string, sessionId: string, to: { agent: string } | { queue: string }): Promise<void> {
    if (!this.#distributed(tenant, sessionId)) throw new DistributionError("transfers are made in the tenant's ACD", "unsupported");
    this.distributor.transfer(tenant, agent, sessionId, to);
    await this.settled();
  }

  loginQueues(tenant: string, agent: string, queues: string[]): void {
    this.distributor.login(tenant, agent, queues);
  }

  logoutQueues(tenant: string, agent: string, queues?: string[]): void {
    this.distributor.logout(tenant, agent, queues);
  }

  agentQueues(tenant: string, agent: string): string[] {
    return this.distributor.agentQueues(tenant, agent);
  }

  queues(tenant: string) {
    return this.distributor.queues(tenant);
  }

  supervisorAcd(tenant: string): AcdStatus | undefined {
    return this.#status.get(tenant)?.snapshot();
  }

  async send(command: SendRequested): Promise<void> {
    // An agent's reply continues the trace of the email it answers, though it starts from an HTTP request.
    const traceparent = command.sessionId ? await this.#sessions.traceparent(command.sessionId) : undefined;
    await publishJson(this.#js, this.o.names.subjects.mailSend(command.tenant, command.mailbox), command, {
      msgId: command.commandId,
      ...(traceparent ? { headers: { traceparent } } : {}),
    });
  }

  /** The webhook ACD reports what happened to a session; signed, and applied once per event id. */
  async acdCallback(tenant: string, body: string, headers: IncomingMessage["headers"]): Promise<{ status: number; body: unknown }> {
    const hook = this.#webhooks.get(tenant);
    if (!hook) return { status: 404, body: { error: "not found" } };
    const v = verify(hook.secret, headers, body, Math.floor(this.#now() / 1000));
    if (!v.ok) return { status: 401, body: { error: v.reason } };
    let e: { eventId?: unknown; sessionId?: unknown; type?: unknown; agent?: unknown; queue?: unknown; outcome?: unknown; reason?: unknown };
    try {
      e = JSON.parse(body) as typeof e;
    } catch {
      return { status: 400, body: { error: "the body must be JSON" } };
    }
    const types = ["assigned", "delivered", "transferred", "completed", "unanswered"] as const;
    if (typeof e.eventId !== "string" || !e.eventId || typeof e.sessionId !== "string" || !types.includes(e.type as (typeof types)[number])) {
      return { status: 400, body: { error: "give eventId, sessionId and type (assigned, delivered, transferred, completed or unanswered)" } };
    }
    const session = await this.#sessions.forAgent(tenant, e.sessionId);
    if (!session) return { status: 404, body: { error: "no such session" } };
    const inserted = await this.o.pool.query("INSERT INTO acd_callbacks (tenant, event_id, session_id, kind) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", [tenant, e.eventId, e.sessionId, e.type]);
    if (!inserted.rowCount) return { status: 200, body: { duplicate: true } };
    const agent = typeof e.agent === "string" ? e.agent : undefined;
    const outcome = typeof e.outcome === "string" ? e.outcome : "completed";
    // The ACD gave up on it (queue timeout, abandon), or closed it without any agent ever having
    // it: the unanswered policy, never "completed".
    if (e.type === "unanswered" || (e.type === "completed" && !agent && !session.agent)) {
      const reason = typeof e.reason === "string" && e.reason ? e.reason : e.type === "completed" ? "closed-without-agent" : "no-agent";
      await this.#unanswered(tenant, e.sessionId, reason, { via: "webhook", eventId: e.eventId, ...(e.type === "completed" ? { outcome } : {}) });
      return { status: 200, body: { ok: true } };
    }
    const type = e.type as SessionState & (typeof types)[number];
    await this.#sessions.transition(e.sessionId, type, { via: "webhook", eventId: e.eventId }, {
      ...(type === "transferred" ? { agent: agent ?? null } : agent ? { agent } : {}),
      ...(type === "completed" ? { outcome } : {}),
      ...(typeof e.queue === "string" ? { queue: e.queue } : {}),
    });
    if (type === "assigned" && agent) await this.#published(e.sessionId, "assigned", agent, "", e.eventId);
    if (type === "completed") await this.#published(e.sessionId, "completed", agent ?? null, outcome);
    return { status: 200, body: { ok: true } };
  }

  acdEmailAllowed(tenant: string, sessionId: string, query: URLSearchParams): boolean {
    const hook = this.#webhooks.get(tenant);
    const expires = Number(query.get("expires"));
    const sig = query.get("sig") ?? "";
    if (!hook || !Number.isInteger(expires) || expires < this.#now() / 1000) return false;
    const expected = Buffer.from(linkSignature(hook.secret, tenant, sessionId, expires));
    const given = Buffer.from(sig);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  #emailLink(tenant: string, sessionId: string, secret: string): string {
    const base = this.o.config.agentApi.publicUrl ?? this.api?.url ?? `http://${this.o.config.agentApi.host}:${this.o.config.agentApi.port}`;
    const expires = Math.floor(this.#now() / 1000) + EMAIL_LINK_TTL_S;
    return `${base.replace(/\/$/, "")}/api/acd/${tenant}/sessions/${sessionId}/email?expires=${expires}&sig=${linkSignature(secret, tenant, sessionId, expires)}`;
  }
}

function linkSignature(secret: string, tenant: string, sessionId: string, expires: number): string {
  return createHmac("sha256", secret).update(`email-link.${tenant}.${sessionId}.${expires}`).digest("hex");
}

function pick(headers: Record<string, string>, name: string): { traceparent?: string } {
  const value = headers[name];
  return value ? { traceparent: value } : {};
}
