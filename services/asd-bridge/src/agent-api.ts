import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveSecret, type PostroomConfig, type Tenant } from "@postroom/config";
import { isValidAddress, replyRecipients, type AcdStatus, type SendRequested } from "@postroom/contracts";
import type { AuditEntry, AuditQuery, AuditRow } from "@postroom/db";
import type { Logger } from "@postroom/telemetry";
import { DistributionError, type QueueView } from "./builtin-distributor.js";
import { ClientAddress } from "./client-address.js";
import { HostCheck } from "./host-check.js";
import { HtmlPool } from "./html-pool.js";
import { accountKey, LoginGuard, type LoginRefusal } from "./login-guard.js";
import type { ReplyTracker } from "./replies.js";
import type { SessionDetail, SessionStore } from "./sessions.js";

/** What the API asks of the bridge; the bridge decides which ACD a tenant's session goes through. */
export interface AgentActions {
  accept(tenant: string, agent: string, sessionId: string): Promise<void>;
  close(tenant: string, agent: string, sessionId: string, outcome: string): Promise<void>;
  transfer(tenant: string, agent: string, sessionId: string, to: { agent: string } | { queue: string }): Promise<void>;
  loginQueues(tenant: string, agent: string, queues: string[]): void;
  logoutQueues(tenant: string, agent: string, queues?: string[]): void;
  agentQueues(tenant: string, agent: string): string[];
  queues(tenant: string): QueueView[];
  /** The tenant's ACD status (state, held-back offers, unanswered emails) for the supervisor view. */
  supervisorAcd?(tenant: string): AcdStatus | undefined;
  send(command: SendRequested): Promise<void>;
  /** Signed ACD callbacks (webhook adapter); absent when no tenant uses one. */
  acdCallback?(tenant: string, body: string, headers: IncomingMessage["headers"]): Promise<{ status: number; body: unknown }>;
  /** A signed link from an ACD to one session's email (webhook adapter). */
  acdEmailAllowed?(tenant: string, sessionId: string, query: URLSearchParams): boolean;
}

export interface AgentApiOptions {
  config: PostroomConfig;
  store: SessionStore;
  actions: AgentActions;
  logger: Logger;
  host: string;
  port: number;
  /** Where agents' password references are resolved (process.env in production). */
  env?: NodeJS.ProcessEnv;
  /** Token lifetime; an agent logs in again after it. */
  tokenTtlMs?: number;
  clock?: () => number;
  /** Where each reply's outcome is kept; without it replies are sent but not followed. */
  replies?: ReplyTracker;
  /** Sanitises emails' HTML off the event loop (default: a pool with the default budgets). */
  html?: HtmlPool;
  /** Where every agent action is recorded (audit_events); without it nothing is (tests of other parts). */
  audit?: AuditTrail;
}

/** The audit trail as the API uses it (the bridge passes @postroom/db's recordAudit / queryAudit over its pool). */
export interface AuditTrail {
  record(entry: AuditEntry): Promise<void>;
  query(q: AuditQuery): Promise<AuditRow[]>;
}

/** Who is asking, as the API saw the request: the principal (once known) and the socket's peer. */
interface Caller {
  address: string;
}

interface Principal {
  tenant: string;
  agent: string;
  supervisor: boolean;
  expires: number;
  /** The client's address at log-in (audit rows carry the address of each request). */
  address: string;
}

/** An answer with a status, for errors the client caused (never a stack trace). */
class HttpError extends Error {
  override name = "HttpError";
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const STATIC = resolve(fileURLToPath(new URL("../desktop", import.meta.url)));
const OPENAPI = resolve(fileURLToPath(new URL("../openapi.yaml", import.meta.url)));
const MAX_BODY = 1024 * 1024;

/**
 * The agent API and desktop: log in, queues, my sessions, the email (HTML sanitized),
 * attachments, reply / reply-all / forward as `mail.send` commands, transfer, close, and the
 * supervisor's queue view. Documented in openapi.yaml.
 *
 * Authentication: an agent logs in with tenant, agent id and the password from the config and
 * gets a bearer token (random, kept in memory, expiring). The tenant boundary: every session
 * read goes through `SessionStore.forAgent(tenant, id, agent)`, whose WHERE clause carries the
 * caller's tenant and agent; anything else answers 404, the same as an id that does not exist.
 * Tokens in memory means a bridge restart logs agents out — accepted for a first version; the
 * desktop sends them back to the login form.
 */
export class AgentApi {
  #server: Server | undefined;
  readonly #tokens = new Map<string, Principal>();
  readonly #now: () => number;
  readonly #html: HtmlPool;
  readonly #logins: LoginGuard;
  readonly #hosts: HostCheck;
  readonly #clients: ClientAddress;
  /** Counters for the metrics work. */
  readonly stats = { requests: 0, loginsFailed: 0, loginsThrottled: 0, hostsRefused: 0, sendsRequested: 0 };

  constructor(private readonly o: AgentApiOptions) {
    this.#now = o.clock ?? Date.now;
    this.#html = o.html ?? new HtmlPool();
    this.#logins = new LoginGuard(o.config.agentApi.login);
    this.#clients = new ClientAddress(o.config.agentApi.trustedProxies);
    this.#hosts = new HostCheck({ host: o.host, publicUrl: o.config.agentApi.publicUrl, allowedHosts: o.config.agentApi.allowedHosts });
  }

  /** Host header values answered (logged at start). */
  get allowedHosts(): string[] {
    return this.#hosts.allowed;
  }

  async start(): Promise<void> {
    this.#html.warm();
    this.#server = createServer((req, res) => void this.#handle(req, res));
    this.#server.requestTimeout = 30_000;
    await new Promise<void>((r, reject) => {
      this.#server!.once("error", reject);
      this.#server!.listen(this.o.port, this.o.host, () => r());
    });
  }

  /** The HTML budgets in force (time, size, threads). */
  get htmlLimits(): HtmlPool["limits"] {
    return this.#html.limits;
  }

  get url(): string {
    const a = this.#server?.address() as AddressInfo | undefined;
    return `http://${this.o.host.includes(":") ? `[${this.o.host}]` : this.o.host}:${a?.port ?? this.o.port}`;
  }

  async stop(): Promise<void> {
    const s = this.#server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
    // After the server: no request is waiting for a sanitised body any more.
    await this.#html.stop();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.requests++;
    const url = new URL(req.url ?? "/", "http://agent-api");
    const caller: Caller = { address: this.#clients.of(req) };
    try {
      // Before anything else, the desktop's files included: a rebound name must get nothing.
      if (!this.#hosts.allows(req.headers.host)) {
        this.stats.hostsRefused++;
        this.o.logger.warn({ host: String(req.headers.host ?? "").slice(0, 200), clientAddress: caller.address, path: url.pathname }, "request for a host name this API does not serve refused");
        if (!req.headers.host) throw new HttpError(400, "the request has no Host header");
        throw new HttpError(421, "this API does not answer for that host name: list it in agentApi.allowedHosts if it is yours");
      }
      await this.#route(req, res, url, caller);
    } catch (error) {
      if (error instanceof HttpError) return json(res, error.status, { error: error.message }, error.headers);
      if (error instanceof DistributionError) {
        const status = error.code === "unknown-session" || error.code === "not-yours" ? 404 : error.code === "limit" || error.code === "not-logged-in" || error.code === "unsupported" ? 409 : 400;
        return json(res, status, { error: status === 404 ? "no such session" : error.message });
      }
      this.o.logger.error({ path: url.pathname, problem: (error as Error).message }, "agent API request failed");
      if (!res.headersSent) json(res, 500, { error: "internal error; see the asd-bridge log" });
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse, url: URL, caller: Caller): Promise<void> {
    const path = url.pathname;
    const method = req.method ?? "GET";
    if (method === "GET" && (path === "/" || path === "/desktop" || path === "/desktop.js" || path === "/desktop.css")) return this.#static(res, path);
    if (method === "GET" && path === "/api/openapi.yaml") return send(res, 200, "application/yaml; charset=utf-8", await readFile(OPENAPI));
    if (method === "POST" && path === "/api/login") return this.#login(req, res, caller);

    const callback = /^\/api\/acd\/([a-z0-9_-]+)\/callback$/.exec(path);
    if (callback && method === "POST") {
      if (!this.o.actions.acdCallback) throw new HttpError(404, "no ACD callbacks here");
      const r = await this.o.actions.acdCallback(callback[1]!, await body(req), req.headers);
      return json(res, r.status, r.body);
    }
    const acdEmail = /^\/api\/acd\/([a-z0-9_-]+)\/sessions\/([0-9a-f-]+)\/email$/.exec(path);
    if (acdEmail && method === "GET") {
      const [, tenant, id] = acdEmail as unknown as [string, string, string];
      if (!this.o.actions.acdEmailAllowed?.(tenant, id, url.searchParams)) throw new HttpError(403, "the link is not valid or has expired");
      return json(res, 200, (await this.#email(tenant, id, undefined)).view);
    }

    const me = this.#principal(req);
    /** Appends the audit row of an action by the caller (awaited: an action is answered only once recorded). */
    const audit = (kind: AuditEntry["kind"], extra: Partial<AuditEntry> = {}) =>
      this.#audit({ tenant: me.tenant, actorKind: me.supervisor ? "supervisor" : "agent", actor: me.agent, kind, clientAddress: caller.address, ...extra });
    if (method === "POST" && path === "/api/logout") {
      this.o.actions.logoutQueues(me.tenant, me.agent);
      this.#tokens.delete(bearer(req) ?? "");
      await audit("agent.logout");
      return json(res, 200, { ok: true });
    }
    if (method === "POST" && path === "/api/logout/everywhere") {
      const ended = this.#logoutEverywhere(me.tenant, me.agent);
      await audit("agent.logout-everywhere", { detail: { tokensEnded: ended } });
      this.o.logger.info({ tenant: me.tenant, agent: me.agent, tokensEnded: ended, clientAddress: caller.address }, "agent logged out everywhere");
      return json(res, 200, { ok: true, tokensEnded: ended });
    }
    const kick = /^\/api\/supervisor\/agents\/([^/]+)\/logout$/.exec(path);
    if (method === "POST" && kick) {
      if (!me.supervisor) throw new HttpError(403, "supervisors only");
      const agent = decodeURIComponent(kick[1]!);
      if (!this.#tenant(me.tenant).agents.some((a) => a.id === agent)) throw new HttpError(404, "no such agent");
      const ended = this.#logoutEverywhere(me.tenant, agent);
      await audit("agent.logout-everywhere", { detail: { agent, tokensEnded: ended } });
      this.o.logger.info({ tenant: me.tenant, agent, by: me.agent, tokensEnded: ended, clientAddress: caller.address }, "agent logged out everywhere by a supervisor");
      return json(res, 200, { ok: true, tokensEnded: ended });
    }
    if (method === "GET" && path === "/api/supervisor/audit") {
      if (!me.supervisor) throw new HttpError(403, "supervisors only");
      if (!this.o.audit) throw new HttpError(404, "no audit trail here");
      const q = url.searchParams;
      const since = q.get("since") ? new Date(q.get("since")!) : undefined;
      const until = q.get("until") ? new Date(q.get("until")!) : undefined;
      if ((since && Number.isNaN(since.getTime())) || (until && Number.isNaN(until.getTime()))) throw new HttpError(400, "since and until are ISO times, e.g. 2026-12-01T08:00:00Z");
      const limit = q.get("limit") ? Number(q.get("limit")) : undefined;
      if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new HttpError(400, "limit is a positive whole number");
      // The tenant is the caller's, never a parameter: a supervisor reads only her own tenant.
      const rows = await this.o.audit.query({
        tenant: me.tenant,
        ...(since ? { since } : {}),
        ...(until ? { until } : {}),
        ...(q.get("agent") ? { actor: q.get("agent")! } : {}),
        ...(q.get("kind") ? { kindPrefix: q.get("kind")! } : {}),
        ...(limit ? { limit } : {}),
      });
      await audit("supervisor.audit", { detail: { query: Object.fromEntries(q) } });
      return json(res, 200, { events: rows.map((r) => ({ ...r, at: r.at.toISOString() })) });
    }
    if (method === "GET" && path === "/api/me") return json(res, 200, { tenant: me.tenant, agent: me.agent, supervisor: me.supervisor, queues: this.o.actions.agentQueues(me.tenant, me.agent), allowed: this.#agentConfig(me).queues });
    if (method === "POST" && path === "/api/queues/login") {
      const { queues } = (await jsonBody(req)) as { queues?: unknown };
      if (!Array.isArray(queues) || queues.length === 0 || !queues.every((q) => typeof q === "string")) throw new HttpError(400, "give queues: a non-empty list of queue names");
      const allowed = this.#agentConfig(me).queues;
      const refused = (queues as string[]).filter((q) => allowed.length > 0 && !allowed.includes(q));
      if (refused.length) throw new HttpError(403, `not your queue(s): ${refused.join(", ")}`);
      this.o.actions.loginQueues(me.tenant, me.agent, queues as string[]);
      await audit("queue.login", { detail: { queues } });
      return json(res, 200, { queues: this.o.actions.agentQueues(me.tenant, me.agent) });
    }
    if (method === "POST" && path === "/api/queues/logout") {
      const { queues } = (await jsonBody(req)) as { queues?: string[] };
      this.o.actions.logoutQueues(me.tenant, me.agent, Array.isArray(queues) && queues.length ? queues : undefined);
      await audit("queue.logout", { detail: { queues: Array.isArray(queues) && queues.length ? queues : "all" } });
      return json(res, 200, { queues: this.o.actions.agentQueues(me.tenant, me.agent) });
    }
    if (method === "GET" && path === "/api/sessions") {
      const rows = await this.o.store.ofAgent(me.tenant, me.agent);
      return json(res, 200, {
        sessions: rows.map((r) => ({ id: r.id, mailbox: r.mailbox, queue: r.queue, state: r.state, subject: r.subject, from: r.from_address, offeredAt: r.offered_at?.toISOString() ?? null })),
      });
    }
    if (method === "GET" && path === "/api/supervisor/queues") {
      if (!me.supervisor) throw new HttpError(403, "supervisors only");
      const acd = this.o.actions.supervisorAcd?.(me.tenant);
      return json(res, 200, {
        queues: this.o.actions.queues(me.tenant),
        ...(acd ? { acd: { type: acd.acd, state: acd.state, since: acd.since, heldBack: acd.heldBack, unanswered: acd.unanswered, problems: acd.problems } } : {}),
      });
    }

    const m = /^\/api\/sessions\/([^/]+)(?:\/([a-z-]+)(?:\/(\d+))?)?$/.exec(path);
    if (!m) throw new HttpError(404, "not found");
    const [, id, action, index] = m as unknown as [string, string, string | undefined, string | undefined];
    if (method === "GET" && action === undefined) {
      const email = await this.#email(me.tenant, id, me.agent);
      await audit("session.open", { sessionId: email.session.id, mailbox: email.session.mailbox, ref: email.messageKey });
      return json(res, 200, email.view);
    }
    if (method === "GET" && action === "attachments" && index !== undefined) return this.#attachment(res, me, id, Number(index), audit);
    if (method === "GET" && action === "replies" && index === undefined) {
      // The desktop polls this while a reply is on its way: small, and no email body.
      const s = await this.o.store.forAgent(me.tenant, id, me.agent);
      if (!s) throw new HttpError(404, "no such session");
      return json(res, 200, { replies: (await this.o.replies?.ofSession(s.id)) ?? [] });
    }
    if (method !== "POST") throw new HttpError(404, "not found");
    // Every action below first proves the session is this agent's, in this tenant.
    const session = await this.o.store.forAgent(me.tenant, id, me.agent);
    if (!session || !["assigned", "delivered"].includes(session.state)) throw new HttpError(404, "no such session");
    const input = (await jsonBody(req)) as Record<string, unknown>;
    const about = { sessionId: session.id, mailbox: session.mailbox, ref: session.message_key };
    switch (action) {
      case "accept":
        await this.o.actions.accept(me.tenant, me.agent, id);
        await audit("session.accept", about);
        return json(res, 200, { ok: true });
      case "close": {
        const outcome = typeof input.outcome === "string" && input.outcome.trim() ? input.outcome.trim().slice(0, 64) : "closed";
        await this.o.actions.close(me.tenant, me.agent, id, outcome);
        await audit("session.close", { ...about, detail: { outcome } });
        return json(res, 200, { ok: true });
      }
      case "transfer": {
        const to = typeof input.agent === "string" ? { agent: input.agent } : typeof input.queue === "string" ? { queue: input.queue } : undefined;
        if (!to) throw new HttpError(400, "give agent or queue");
        await this.o.actions.transfer(me.tenant, me.agent, id, to);
        await audit("session.transfer", { ...about, detail: { to } });
        return json(res, 200, { ok: true });
      }
      case "reply":
      case "reply-all":
      case "forward":
        return json(res, 202, await this.#compose(me, session, action, input, (commandId, detail) => audit(`session.${action}`, { ...about, commandId, detail })));
      default:
        throw new HttpError(404, "not found");
    }
  }

  async #compose(
    me: Principal,
    session: NonNullable<Awaited<ReturnType<SessionStore["forAgent"]>>>,
    kind: "reply" | "reply-all" | "forward",
    input: Record<string, unknown>,
    audit: (commandId: string, detail: Record<string, unknown>) => Promise<void>,
  ): Promise<{ commandId: string }> {
    const mailbox = this.#tenant(me.tenant).mailboxes.find((mb) => mb.id === session.mailbox);
    if (!mailbox) throw new HttpError(404, "no such session");
    if (!mailbox.smtp) throw new HttpError(409, "this campaign has no outgoing server configured");
    if (kind === "forward" ? !mailbox.agentsMayForward : !mailbox.agentsMayAnswer) throw new HttpError(403, `this campaign does not allow agents to ${kind === "forward" ? "forward" : "answer"}`);
    const text = typeof input.text === "string" ? input.text : "";
    if (!text.trim()) throw new HttpError(400, "the message text is empty");
    if (text.length > 500_000) throw new HttpError(413, "the message text is too long");
    const requestId = typeof input.requestId === "string" && /^[A-Za-z0-9_-]{8,64}$/.test(input.requestId) ? input.requestId : undefined;
    if (!requestId) throw new HttpError(400, "give requestId (8-64 letters, digits, - or _): a retried click must not send twice");
    let to: string[];
    let cc: string[] = [];
    if (kind === "forward") {
      to = addressList(input.to, "to");
      if (to.length === 0) throw new HttpError(400, "give to: the address(es) to forward to");
    } else if (input.to !== undefined || input.cc !== undefined) {
      // The agent saw the proposed recipients (replyTargets) and changed them: those go.
      to = addressList(input.to, "to");
      cc = addressList(input.cc, "cc");
      if (to.length + cc.length === 0) throw new HttpError(400, "give at least one recipient in to or cc");
    } else {
      ({ to, cc } = this.#replyTargets(session, await this.o.store.addresses(session.message_row), [mailbox.address, ...mailbox.aliases])[kind]);
      if (to.length + cc.length === 0) throw new HttpError(400, "the email has no address a reply can go to: give to");
    }
    // Every address the message would go to, checked here so that a 202 means smtp-sender has
    // nothing to refuse about them: the same syntax check it applies (no CR/LF or other control
    // characters, one bare address each), and the campaign's cap over To, Cc and the default
    // Cc/Bcc it adds — counted the way smtp-sender counts its envelope.
    const bad = [...to, ...cc].find((a) => !isValidAddress(a));
    if (bad !== undefined) throw new HttpError(400, `${JSON.stringify(bad)} is not a valid e-mail address; give bare addresses such as ann@example.com`);
    const recipients = new Set([...to, ...cc, ...mailbox.defaultCc, ...mailbox.defaultBcc].map((a) => a.toLowerCase())).size;
    const cap = mailbox.smtp.maxRecipients;
    if (recipients > cap) {
      const defaults = mailbox.defaultCc.length + mailbox.defaultBcc.length;
      throw new HttpError(400, `${recipients} recipients${defaults ? ` (with the campaign's ${defaults} default Cc/Bcc)` : ""} is more than this campaign allows in one message (${cap}, smtp.maxRecipients): send to fewer addresses`);
    }
    // Derived from the session and the client's request id: a retried click is the same command.
    const commandId = `agent-${createHash("sha256").update(`${session.id}/${kind}/${requestId}`).digest("hex").slice(0, 40)}`;
    const command: SendRequested = {
      version: "v1",
      commandId,
      tenant: me.tenant,
      mailbox: session.mailbox,
      kind,
      original: session.message_key,
      sessionId: session.id,
      agent: me.agent,
      to,
      cc,
      bcc: [],
      text,
      ...(kind === "forward" ? { forwardAs: "inline" as const } : {}),
      requestedAt: new Date(this.#now()).toISOString(),
    };
    // In the audit trail before the command exists: no send goes out unrecorded.
    await audit(commandId, { to, cc, recipients });
    // Recorded before the command exists, so its result (mail.sent / mail.send-failed) always finds the row.
    await this.o.replies?.queued({ commandId, tenant: me.tenant, mailbox: session.mailbox, sessionId: session.id, agent: me.agent, kind, to, cc, text });
    await this.o.actions.send(command);
    this.stats.sendsRequested++;
    this.o.logger.info({ tenant: me.tenant, agent: me.agent, sessionId: session.id, kind, commandId }, "agent send requested");
    return { commandId };
  }

  /** The email of a session as the API shows it (`view`), with what the audit row names. */
  async #email(tenant: string, id: string, agent: string | undefined): Promise<{ view: unknown; session: { id: string; mailbox: string }; messageKey: string }> {
    const s = await this.o.store.forAgent(tenant, id, agent);
    if (!s) throw new HttpError(404, "no such session");
    return { view: await this.#emailView(tenant, s, agent), session: { id: s.id, mailbox: s.mailbox }, messageKey: s.message_key };
  }

  async #emailView(tenant: string, s: SessionDetail, agent: string | undefined): Promise<unknown> {
    const addresses = await this.o.store.addresses(s.message_row);
    const attachments = await this.o.store.attachments(s.message_row);
    const base = agent ? `/api/sessions/${s.id}/attachments` : undefined;
    const byCid = new Map(attachments.filter((a) => a.content_id).map((a) => [a.content_id!.replace(/^<|>$/g, ""), a.part_index]));
    const mailbox = this.#tenant(tenant).mailboxes.find((mb) => mb.id === s.mailbox);
    const inline = base ? Object.fromEntries([...byCid].map(([cid, index]) => [cid, `${base}/${index}`])) : {};
    // No text part: should the HTML not be shown, a text rendering of it (made in the pool too).
    const shown = s.html_body ? await this.#html.render(`${s.message_row}:${base ?? "acd"}`, s.html_body, inline, s.text_body === null) : { html: null, notice: null, text: null };
    const text = s.text_body ?? shown.text ?? "";
    return {
      session: { id: s.id, mailbox: s.mailbox, queue: s.queue, state: s.state, agent: s.agent, warnings: s.warnings, offeredAt: s.offered_at?.toISOString() ?? null },
      campaign: { address: mailbox?.address ?? null, mayAnswer: Boolean(mailbox?.agentsMayAnswer && mailbox.smtp), mayForward: Boolean(mailbox?.agentsMayForward && mailbox.smtp) },
      email: {
        subject: s.subject,
        from: s.from_address,
        to: addresses.filter((a) => a.role === "to").map((a) => a.address),
        cc: addresses.filter((a) => a.role === "cc").map((a) => a.address),
        replyTo: addresses.filter((a) => a.role === "reply-to").map((a) => a.address),
        date: (s.date_header ?? s.received_at).toISOString(),
        // Which clock `date` is: the customer's Date header, or (absent or unreadable) when the
        // mailbox received it; `dateRaw` is the header as sent.
        dateSource: s.date_header ? "header" : "received",
        dateRaw: s.date_raw,
        classification: s.classification,
        classificationReason: s.classification_reason,
        messageId: s.rfc_message_id,
        text,
        html: shown.html,
        htmlNotice: shown.notice,
        parseError: s.parse_error,
        // `name` is the archiver's sanitised name (no bidi overrides, invisible characters or device
        // names: what the agent sees is what gets saved); the sender's own is `originalName`.
        attachments: attachments.map((a) => ({ index: a.part_index, name: a.stored_name, originalName: a.original_name, contentType: a.content_type, size: Number(a.size), inline: a.inline, url: base ? `${base}/${a.part_index}` : null })),
      },
      // Where a reply and a reply-all would go, before the agent sends (the agent may change them).
      replyTargets: mailbox ? this.#replyTargets(s, addresses, [mailbox.address, ...mailbox.aliases]) : null,
      replies: agent ? ((await this.o.replies?.ofSession(s.id)) ?? []) : [],
    };
  }

  /** The shared rule (`replyRecipients` in contracts), the same one smtp-sender applies; `own`: the mailbox's address and aliases. */
  #replyTargets(s: Pick<SessionDetail, "from_address">, addresses: { role: string; address: string }[], own: string[]): Record<"reply" | "reply-all", { to: string[]; cc: string[] }> {
    const of = (role: string) => addresses.filter((a) => a.role === role).map((a) => a.address);
    const original = { from: s.from_address, replyTo: of("reply-to"), to: of("to"), cc: of("cc") };
    return { reply: replyRecipients("reply", original, own), "reply-all": replyRecipients("reply-all", original, own) };
  }

  async #attachment(res: ServerResponse, me: Principal, id: string, index: number, audit: (kind: AuditEntry["kind"], extra: Partial<AuditEntry>) => Promise<void>): Promise<void> {
    const s = await this.o.store.forAgent(me.tenant, id, me.agent);
    if (!s) throw new HttpError(404, "no such session");
    const a = (await this.o.store.attachments(s.message_row)).find((x) => x.part_index === index);
    if (!a) throw new HttpError(404, "no such attachment");
    await audit("session.attachment", { sessionId: s.id, mailbox: s.mailbox, ref: s.message_key, detail: { index, name: a.stored_name } });
    const parts = resolve(s.archive_path, "parts");
    const file = resolve(parts, a.stored_name);
    if (!file.startsWith(parts + sep)) throw new HttpError(404, "no such attachment");
    const info = await stat(file).catch(() => undefined);
    if (!info) throw new HttpError(410, "the attachment's file is no longer in the archive");
    // The sanitised name: a sender's "report\u202efdp.bat" must not be saved looking like a PDF.
    const name = a.stored_name.replace(/["\\\r\n]/g, "_");
    // Served as a download, never rendered in our origin: an HTML or SVG attachment could run script.
    res.writeHead(200, {
      "content-type": "application/octet-stream",
      "content-length": String(info.size),
      "content-disposition": `attachment; filename="${name.replace(/[^\x20-\x7e]/g, "_")}"; filename*=UTF-8''${encodeURIComponent(name)}`,
      "x-content-type-options": "nosniff",
      "cache-control": "private, no-store",
    });
    createReadStream(file).pipe(res);
  }

  async #login(req: IncomingMessage, res: ServerResponse, caller: Caller): Promise<void> {
    const input = (await jsonBody(req)) as { tenant?: unknown; agent?: unknown; password?: unknown };
    const tenantId = typeof input.tenant === "string" ? input.tenant : "";
    const agentId = typeof input.agent === "string" ? input.agent : "";
    const account = accountKey(tenantId, agentId);
    // What the log and audit say about the attempt: never the password, never an unbounded value.
    const who = { tenant: tenantId.slice(0, 64), agent: agentId.slice(0, 64), clientAddress: caller.address };
    const tenant = this.o.config.tenants.find((t) => t.id === tenantId);
    const agent = tenant?.agents.find((a) => a.id === agentId);
    const auditRefusal = (kind: "agent.login-refused" | "agent.login-locked", detail: Record<string, unknown>) =>
      // Filed only under a configured tenant: made-up tenant ids must not create rows (or tenants) in the trail.
      tenant ? this.#audit({ tenant: tenant.id, actorKind: "agent", actor: who.agent, kind, clientAddress: caller.address, detail }) : Promise.resolve();
    const throttled = (r: LoginRefusal) => {
      this.stats.loginsThrottled++;
      const wait = r.retryAfterSeconds;
      return new HttpError(
        429,
        r.kind === "locked"
          ? `too many wrong passwords for this ${r.scope === "account" ? "agent" : "client address"}: logins are locked for ${wait} s (the right password is refused too until then)`
          : `too many wrong passwords: wait ${wait} s before the next try`,
        { "retry-after": String(wait) },
      );
    };
    const before = this.#logins.check(account, caller.address, this.#now());
    if (before) {
      // Not looked at: answering "right" or "wrong" now would let guessing go on through the lock.
      this.o.logger.warn({ ...who, scope: before.scope, lock: before.kind, retryAfterSeconds: before.retryAfterSeconds }, "agent login refused: too many wrong passwords");
      throw throttled(before);
    }
    const fail = async (reason: string) => {
      this.stats.loginsFailed++;
      const after = this.#logins.failed(account, caller.address, this.#now());
      this.o.logger.warn({ ...who, reason, ...(after ? { scope: after.scope, lock: after.kind, retryAfterSeconds: after.retryAfterSeconds } : {}) }, "agent login refused");
      await auditRefusal("agent.login-refused", { reason });
      if (after?.kind === "locked") {
        this.o.logger.warn({ ...who, scope: after.scope, lockedForSeconds: after.retryAfterSeconds }, "agent logins locked");
        await auditRefusal("agent.login-locked", { scope: after.scope, seconds: after.retryAfterSeconds });
      }
      return json(res, 401, { error: "unknown tenant, agent or wrong password" });
    };
    if (typeof input.password !== "string" || !tenant || !agent) return fail(!tenant ? "unknown tenant" : !agent ? "unknown agent" : "no password");
    let expected: string;
    try {
      expected = await resolveSecret(agent.password, this.o.env ?? process.env);
    } catch (error) {
      // The reference is named in the log; the value never is.
      this.o.logger.error({ tenant: tenant.id, agent: agent.id, problem: (error as Error).message }, "agent password cannot be resolved");
      return json(res, 401, { error: "unknown tenant, agent or wrong password" });
    }
    const digest = (s: string) => createHash("sha256").update(s).digest();
    if (!timingSafeEqual(digest(expected), digest(input.password))) return fail("wrong password");
    this.#logins.succeeded(account);
    const token = randomBytes(32).toString("base64url");
    this.#tokens.set(token, { tenant: tenant.id, agent: agent.id, supervisor: agent.supervisor, expires: this.#now() + (this.o.tokenTtlMs ?? 12 * 3600_000), address: caller.address });
    await this.#audit({ tenant: tenant.id, actorKind: agent.supervisor ? "supervisor" : "agent", actor: agent.id, kind: "agent.login", clientAddress: caller.address });
    this.o.logger.info({ tenant: tenant.id, agent: agent.id, clientAddress: caller.address }, "agent logged in");
    return json(res, 200, { token, tenant: tenant.id, agent: agent.id, supervisor: agent.supervisor });
  }

  /** Ends every token of one agent (all her browsers and devices) and takes her out of her queues; how many ended. */
  #logoutEverywhere(tenant: string, agent: string): number {
    let ended = 0;
    for (const [token, p] of this.#tokens) {
      if (p.tenant === tenant && p.agent === agent) {
        this.#tokens.delete(token);
        ended++;
      }
    }
    this.o.actions.logoutQueues(tenant, agent);
    return ended;
  }

  async #audit(entry: AuditEntry): Promise<void> {
    if (!this.o.audit) return;
    try {
      await this.o.audit.record(entry);
    } catch (error) {
      // The action is not answered as done when its record is missing: the caller sees a 500.
      this.o.logger.error({ tenant: entry.tenant, agent: entry.actor, kind: entry.kind, problem: (error as Error).message }, "audit row not written");
      throw error;
    }
  }

  #principal(req: IncomingMessage): Principal {
    const token = bearer(req);
    const p = token ? this.#tokens.get(token) : undefined;
    if (!p || p.expires < this.#now()) {
      if (token) this.#tokens.delete(token);
      throw new HttpError(401, "log in first");
    }
    return p;
  }

  #tenant(id: string): Tenant {
    const t = this.o.config.tenants.find((x) => x.id === id);
    if (!t) throw new HttpError(404, "not found");
    return t;
  }

  #agentConfig(me: Principal): Tenant["agents"][number] {
    const a = this.#tenant(me.tenant).agents.find((x) => x.id === me.agent);
    if (!a) throw new HttpError(401, "log in first");
    return a;
  }

  async #static(res: ServerResponse, path: string): Promise<void> {
    const file = path === "/desktop.js" ? "desktop.js" : path === "/desktop.css" ? "desktop.css" : "index.html";
    const type = file.endsWith(".js") ? "text/javascript" : file.endsWith(".css") ? "text/css" : "text/html";
    send(res, 200, `${type}; charset=utf-8`, await readFile(join(STATIC, file)));
  }
}

/** Security headers on every answer: the desktop loads only its own script and shows email in a script-less sandbox. */
const HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-src 'self' about:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

function send(res: ServerResponse, status: number, type: string, payload: Buffer | string): void {
  res.writeHead(status, { ...HEADERS, "content-type": type, "cache-control": "no-store" });
  res.end(payload);
}

function json(res: ServerResponse, status: number, payload: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...HEADERS, "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers });
  res.end(JSON.stringify(payload));
}


/** A list of addresses from the client: each must be a bare address smtp-sender will send to. */
function addressList(value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((a) => typeof a === "string")) throw new HttpError(400, `${field} must be a list of addresses`);
  const list = (value as string[]).map((a) => a.trim()).filter(Boolean);
  const bad = list.filter((a) => !isValidAddress(a));
  if (bad.length) throw new HttpError(400, `${field}: "${bad[0]}" is not a valid e-mail address; give bare addresses such as ann@example.com`);
  return [...new Set(list.map((a) => a.toLowerCase()))];
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  return h?.startsWith("Bearer ") ? h.slice(7) : undefined;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, "request body too large");
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function jsonBody(req: IncomingMessage): Promise<unknown> {
  const text = await body(req);
  if (!text) return {};
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch {
    throw new HttpError(400, "the body must be a JSON object");
  }
}
