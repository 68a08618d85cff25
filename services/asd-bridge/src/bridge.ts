import { findMailbox, resolveSecret, type PostroomConfig, type Tenant } from "@postroom/config";
import { MailArchived, type Names, type SendRequested, type SessionAssigned, type SessionCompleted, type SessionOffered } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import { ack, DurableConsumer, jetStreamOf, publishJson, traceHeaders, type NatsConnection, type Verdict } from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { AgentApi, type AgentActions } from "./agent-api.js";
import { BuiltinDistributor, DistributionError, type DistributorEvent, type TenantSettings } from "./builtin-distributor.js";
import { route, RoutingConfigError, validateRouting } from "./routing.js";
import { SessionStore, type SessionState } from "./sessions.js";
import { SoftdialAdapter, type SoftdialEvent } from "./softdial/adapter.js";
import { verify, WebhookClient, WebhookDeliveryError } from "./webhook.js";

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
  /** Backoff of the webhook client (tests shorten it). */
  webhookRetry?: { attempts: number; initialDelayMs: number; maxDelayMs: number };
}

/** Waits longer than this are handed back to JetStream (nak with delay) instead of held in memory. */
const MAX_HELD_WAIT_MS = 20_000;
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
  readonly #webhooks = new Map<string, { client: WebhookClient; secret: string }>();
  api: AgentApi | undefined;
  /** Per mailbox: when the next new session may be released, and a chain that serialises releases. */
  readonly #slots = new Map<string, { next: number; chain: Promise<unknown> }>();
  /** Session state writes, in the order the ACDs reported them. */
  #writes: Promise<unknown> = Promise.resolve();
  #tick: NodeJS.Timeout | undefined;
  readonly #js;
  readonly #now: () => number;
  /** Counters for the metrics work. */
  readonly stats = { offered: 0, notOffered: 0, completed: 0, failed: 0 };

  constructor(private readonly o: BridgeOptions) {
    this.#sessions = new SessionStore(o.pool);
    this.#js = jetStreamOf(o.nc);
    this.#now = o.clock ?? Date.now;
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
    for (const t of this.#tenants()) {
      if (t.acd.type === "softdial") {
        const acd = t.acd;
        const adapter = new SoftdialAdapter({
          host: acd.host,
          port: acd.port,
          switchId: acd.switchId,
          ...(this.o.config.logs.path ? { transcriptDir: this.o.config.logs.path, transcriptPrefix: `softdial-${t.id}` } : {}),
          deliver: async (sessionId, agent) => this.#softdialDeliver(t, sessionId, agent),
          onEvent: (e) => this.#record(() => this.#onSoftdial(t.id, e)),
        });
        this.softdial.set(t.id, adapter);
      }
      if (t.acd.type === "webhook") {
        const secret = await resolveSecret(t.acd.signingSecret, this.o.env ?? process.env);
        this.#webhooks.set(t.id, { secret, client: new WebhookClient({ url: t.acd.url, secret, ...(this.o.webhookRetry ?? {}) }) });
      }
    }
    // Nothing to serve without agents or a webhook ACD; not binding the port then also keeps
    // deployments (and test worlds) without agents free of port clashes.
    const needed = this.#tenants().some((t) => t.agents.length > 0 || t.acd.type === "webhook");
    if (this.o.agentApi !== false && !needed) this.o.logger.info("agent API not started: no agents and no webhook ACD configured");
    if (this.o.agentApi !== false && needed) {
      this.api = new AgentApi({ config: this.o.config, store: this.#sessions, actions: this, logger: this.o.logger.child({ component: "agent-api" }), host: this.o.config.agentApi.host, port: this.o.config.agentApi.port, ...(this.o.env ? { env: this.o.env } : {}) });
      await this.api.start();
      this.o.logger.info({ url: this.api.url }, "agent API listening");
    }
    // After the API (webhook offers carry links to it), before new mail (so nothing is offered twice).
    await this.#restore();
    for (const a of this.softdial.values()) a.start();
    this.#tick = setInterval(() => this.distributor.tick(), 250);
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

  /** Stops taking new mail first, then the API, then the ACD connections, then lets pending writes land. */
  async stop(): Promise<void> {
    await this.#consumer?.stop();
    await this.api?.stop();
    clearInterval(this.#tick);
    for (const a of this.softdial.values()) await a.stop();
    await this.#writes.catch(() => undefined);
  }

  /** Resolves when every state change reported so far is in PostgreSQL. */
  async settled(): Promise<void> {
    await this.#writes;
  }

  #tenants(): Tenant[] {
    return this.o.config.tenants.filter((t) => this.o.tenant === undefined || t.id === this.o.tenant);
  }

  /** Puts sessions released before a restart back where they were: distributor queues, CallGem. */
  async #restore(): Promise<void> {
    for (const t of this.#tenants()) {
      for (const s of await this.#sessions.unfinished(t.id)) {
        const session = { sessionId: s.id, tenant: t.id, mailbox: s.mailbox, queue: s.queue, offeredAt: s.offered_at ?? new Date() };
        if (t.acd.type === "builtin") {
          if (s.state === "delivered" && s.agent) this.distributor.restoreDelivered(session, s.agent);
          else this.distributor.offer(session);
        } else if (t.acd.type === "softdial" && s.state !== "delivered") {
          const offer = await this.#softdialOffer(t, s.id, s.mailbox);
          if (offer) this.softdial.get(t.id)!.offer(offer);
        } else if (t.acd.type === "webhook" && s.state === "offered") {
          // Recorded as offered, but the POST may not have landed before the restart; the ACD
          // dedupes on Idempotency-Key (the session id), so posting again is safe.
          void this.#repost(t, s.id, s.queue);
        }
      }
    }
  }

  async #onArchived(e: MailArchived): Promise<Verdict> {
    const ref = findMailbox(this.o.config, e.tenant, e.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.tenant}/${e.mailbox} is not configured` };
    const decision = route(ref.mailbox, e);
    const log = this.o.logger.child({ tenant: e.tenant, mailbox: e.mailbox, messageKey: e.messageKey });
    if (!decision.offer) {
      this.stats.notOffered++;
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
      // The consumer runs this handler inside the archived event's trace.
      ...pick(traceHeaders(), "traceparent"),
    });
    if (session.state !== "created") return ack; // offered before: a redelivery or a restart

    const key = `${e.tenant}/${e.mailbox}`;
    const slot = this.#slots.get(key) ?? { next: 0, chain: Promise.resolve() };
    this.#slots.set(key, slot);
    const release = slot.chain.then(async (): Promise<Verdict> => {
      const wait = slot.next - this.#now();
      if (wait > MAX_HELD_WAIT_MS) return { action: "retry", delayMs: wait, reason: "waiting for the pause between new sessions" };
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await this.#offer(session.id, e, decision.queue, ref.tenant, warnings);
      slot.next = this.#now() + ref.mailbox.offerPauseSeconds * 1000;
      return ack;
    });
    slot.chain = release.catch(() => undefined);
    return release;
  }

  async #offer(sessionId: string, e: MailArchived, queue: string, tenant: Tenant, warnings: string[]): Promise<void> {
    const acd = tenant.acd.type;
    const offeredAt = new Date(this.#now());
    // Recorded before the ACD hears of it, so that an ACD's quick answer finds the row offered.
    await this.#sessions.transition(sessionId, "offered", { queue, acd });
    if (acd === "builtin") {
      this.distributor.offer({ sessionId, tenant: e.tenant, mailbox: e.mailbox, queue, offeredAt });
    } else if (acd === "softdial") {
      const offer = await this.#softdialOffer(tenant, sessionId, e.mailbox);
      if (offer) this.softdial.get(tenant.id)!.offer(offer);
    } else {
      const hook = this.#webhooks.get(tenant.id)!;
      try {
        await hook.client.post({
          version: "v1",
          type: "session.offered",
          sessionId,
          tenant: e.tenant,
          mailbox: e.mailbox,
          queue,
          from: e.from,
          subject: e.subject,
          offeredAt: offeredAt.toISOString(),
          emailUrl: this.#emailLink(tenant.id, sessionId, hook.secret),
          warnings,
        });
      } catch (error) {
        if (!(error instanceof WebhookDeliveryError)) throw error;
        // Given up after the retries: visible as a failed session (still in the archive), not lost.
        this.stats.failed++;
        await this.#sessions.transition(sessionId, "failed", { reason: error.message, status: error.status, attempts: error.attempts });
        this.o.logger.error({ tenant: e.tenant, mailbox: e.mailbox, sessionId, problem: error.message }, "the ACD did not take the session");
        return;
      }
    }
    this.stats.offered++;
    const event: SessionOffered = { version: "v1", sessionId, tenant: e.tenant, mailbox: e.mailbox, messageKey: e.messageKey, queue, acd, offeredAt: offeredAt.toISOString(), warnings };
    await publishJson(this.#js, this.o.names.subjects.sessionOffered(e.tenant, e.mailbox), event, { msgId: `${sessionId}#offered` });
    this.o.logger.info({ tenant: e.tenant, mailbox: e.mailbox, sessionId, queue }, "session offered");
  }

  async #repost(tenant: Tenant, sessionId: string, queue: string): Promise<void> {
    const hook = this.#webhooks.get(tenant.id)!;
    const row = await this.#sessions.forAgent(tenant.id, sessionId);
    if (!row) return;
    try {
      await hook.client.post({
        version: "v1",
        type: "session.offered",
        sessionId,
        tenant: tenant.id,
        mailbox: row.mailbox,
        queue,
        from: row.from_address,
        subject: row.subject,
        offeredAt: (row.offered_at ?? new Date()).toISOString(),
        emailUrl: this.#emailLink(tenant.id, sessionId, hook.secret),
        warnings: row.warnings,
      });
    } catch (error) {
      this.stats.failed++;
      await this.#sessions.transition(sessionId, "failed", { reason: (error as Error).message });
      this.o.logger.error({ tenant: tenant.id, sessionId, problem: (error as Error).message }, "the ACD did not take the session");
    }
  }

  // --- state changes reported by the ACDs ------------------------------------------------------

  #record(apply: () => Promise<unknown>): void {
    this.#writes = this.#writes.then(apply).catch((error: unknown) => this.o.logger.error({ problem: (error as Error).message }, "session state not recorded"));
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
    switch (e.type) {
      case "queued":
        await s.transition(e.sessionId, "queued", { queue: e.queue, timeoutSeconds: e.timeoutSeconds }, { ...(e.queue ? { queue: e.queue } : {}), agent: null });
        return;
      case "queue-timeout":
        await s.transition(e.sessionId, "timed-out", { queue: e.queue });
        return;
      case "assigned":
        await s.transition(e.sessionId, "assigned", { endpoint: e.endpoint }, { agent: e.agent });
        await this.#published(e.sessionId, "assigned", e.agent, "", e.endpoint);
        return;
      case "delivery-failed":
        await s.transition(e.sessionId, "queued", { reason: e.reason, agent: e.agent }, { agent: null });
        return;
      case "completed":
        await s.transition(e.sessionId, "completed", { outcome: e.outcome }, { outcome: e.outcome });
        await this.#published(e.sessionId, "completed", e.agent, e.outcome);
        return;
      case "rejected":
        this.o.logger.error({ tenant, sessionId: e.sessionId, code: e.code, problem: e.message }, "Softdial rejected a frame");
        if (e.sessionId) await s.transition(e.sessionId, "failed", { code: e.code, message: e.message });
        return;
      case "connected":
        this.o.logger.info({ tenant, connection: e.connection, reoffered: e.reoffered }, "connected to Softdial CallGem");
        return;
      case "disconnected":
        this.o.logger.warn({ tenant, connection: e.connection, reason: e.reason }, "Softdial connection lost; reconnecting");
        return;
      default:
        return;
    }
  }

  async #softdialDeliver(tenant: Tenant, sessionId: string, agent: string): Promise<boolean> {
    // The agent CallGem chose must exist here, so that the desktop can show the email.
    if (!tenant.agents.some((a) => a.id === agent)) return false;
    await this.#writes;
    return this.#sessions.transition(sessionId, "delivered", { via: "softdial" }, { agent });
  }

  async #softdialOffer(tenant: Tenant, sessionId: string, mailboxId: string) {
    const mailbox = tenant.mailboxes.find((m) => m.id === mailboxId);
    const row = await this.#sessions.forAgent(tenant.id, sessionId);
    if (!mailbox || !row) return undefined;
    return { sessionId, from: row.from_address, to: mailbox.address, reference: `postroom ${tenant.id} ${sessionId} ${row.subject}`.slice(0, 1000) };
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

  async accept(tenant: string, agent: string, sessionId: string): Promise<void> {
    if (this.#acdOf(tenant) === "builtin") this.distributor.accept(tenant, agent, sessionId);
    else await this.#sessions.transition(sessionId, "delivered", { via: "agent" }, { agent });
    await this.settled();
  }

  async close(tenant: string, agent: string, sessionId: string, outcome: string): Promise<void> {
    const acd = this.#acdOf(tenant);
    if (acd === "builtin") this.distributor.close(tenant, agent, sessionId, outcome);
    else {
      // The ACD learns of it (ND for Softdial; the webhook ACD reported or will report completion).
      this.softdial.get(tenant)?.close(sessionId, outcome);
      if (acd === "webhook") this.#record(async () => {
        await this.#sessions.transition(sessionId, "completed", { outcome, by: agent }, { outcome });
        await this.#published(sessionId, "completed", agent, outcome);
      });
    }
    await this.settled();
  }

  async transfer(tenant: string, agent: string, sessionId: string, to: { agent: string } | { queue: string }): Promise<void> {
    if (this.#acdOf(tenant) !== "builtin") throw new DistributionError("transfers are made in the tenant's ACD", "unsupported");
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
    let e: { eventId?: unknown; sessionId?: unknown; type?: unknown; agent?: unknown; queue?: unknown; outcome?: unknown };
    try {
      e = JSON.parse(body) as typeof e;
    } catch {
      return { status: 400, body: { error: "the body must be JSON" } };
    }
    const types = ["assigned", "delivered", "transferred", "completed"] as const;
    if (typeof e.eventId !== "string" || !e.eventId || typeof e.sessionId !== "string" || !types.includes(e.type as (typeof types)[number])) {
      return { status: 400, body: { error: "give eventId, sessionId and type (assigned, delivered, transferred or completed)" } };
    }
    const session = await this.#sessions.forAgent(tenant, e.sessionId);
    if (!session) return { status: 404, body: { error: "no such session" } };
    const inserted = await this.o.pool.query("INSERT INTO acd_callbacks (tenant, event_id, session_id, kind) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", [tenant, e.eventId, e.sessionId, e.type]);
    if (!inserted.rowCount) return { status: 200, body: { duplicate: true } };
    const agent = typeof e.agent === "string" ? e.agent : undefined;
    const type = e.type as SessionState & (typeof types)[number];
    const outcome = typeof e.outcome === "string" ? e.outcome : "completed";
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
