import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveSecret, type PostroomConfig, type Tenant } from "@postroom/config";
import type { SendRequested } from "@postroom/contracts";
import type { Logger } from "@postroom/telemetry";
import { DistributionError, type QueueView } from "./builtin-distributor.js";
import { sanitizeEmailHtml } from "./html.js";
import type { SessionStore } from "./sessions.js";

/** What the API asks of the bridge; the bridge decides which ACD a tenant's session goes through. */
export interface AgentActions {
  accept(tenant: string, agent: string, sessionId: string): Promise<void>;
  close(tenant: string, agent: string, sessionId: string, outcome: string): Promise<void>;
  transfer(tenant: string, agent: string, sessionId: string, to: { agent: string } | { queue: string }): Promise<void>;
  loginQueues(tenant: string, agent: string, queues: string[]): void;
  logoutQueues(tenant: string, agent: string, queues?: string[]): void;
  agentQueues(tenant: string, agent: string): string[];
  queues(tenant: string): QueueView[];
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
}

interface Principal {
  tenant: string;
  agent: string;
  supervisor: boolean;
  expires: number;
}

/** An answer with a status, for errors the client caused (never a stack trace). */
class HttpError extends Error {
  override name = "HttpError";
  constructor(
    readonly status: number,
    message: string,
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
  /** Counters for the metrics work. */
  readonly stats = { requests: 0, loginsFailed: 0, sendsRequested: 0 };

  constructor(private readonly o: AgentApiOptions) {
    this.#now = o.clock ?? Date.now;
  }

  async start(): Promise<void> {
    this.#server = createServer((req, res) => void this.#handle(req, res));
    this.#server.requestTimeout = 30_000;
    await new Promise<void>((r, reject) => {
      this.#server!.once("error", reject);
      this.#server!.listen(this.o.port, this.o.host, () => r());
    });
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
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.requests++;
    const url = new URL(req.url ?? "/", "http://agent-api");
    try {
      await this.#route(req, res, url);
    } catch (error) {
      if (error instanceof HttpError) return json(res, error.status, { error: error.message });
      if (error instanceof DistributionError) {
        const status = error.code === "unknown-session" || error.code === "not-yours" ? 404 : error.code === "limit" || error.code === "not-logged-in" || error.code === "unsupported" ? 409 : 400;
        return json(res, status, { error: status === 404 ? "no such session" : error.message });
      }
      this.o.logger.error({ path: url.pathname, problem: (error as Error).message }, "agent API request failed");
      if (!res.headersSent) json(res, 500, { error: "internal error; see the asd-bridge log" });
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname;
    const method = req.method ?? "GET";
    if (method === "GET" && (path === "/" || path === "/desktop" || path === "/desktop.js" || path === "/desktop.css")) return this.#static(res, path);
    if (method === "GET" && path === "/api/openapi.yaml") return send(res, 200, "application/yaml; charset=utf-8", await readFile(OPENAPI));
    if (method === "POST" && path === "/api/login") return this.#login(req, res);

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
      return json(res, 200, await this.#email(tenant, id, undefined));
    }

    const me = this.#principal(req);
    if (method === "POST" && path === "/api/logout") {
      this.o.actions.logoutQueues(me.tenant, me.agent);
      this.#tokens.delete(bearer(req) ?? "");
      return json(res, 200, { ok: true });
    }
    if (method === "GET" && path === "/api/me") return json(res, 200, { tenant: me.tenant, agent: me.agent, supervisor: me.supervisor, queues: this.o.actions.agentQueues(me.tenant, me.agent), allowed: this.#agentConfig(me).queues });
    if (method === "POST" && path === "/api/queues/login") {
      const { queues } = (await jsonBody(req)) as { queues?: unknown };
      if (!Array.isArray(queues) || queues.length === 0 || !queues.every((q) => typeof q === "string")) throw new HttpError(400, "give queues: a non-empty list of queue names");
      const allowed = this.#agentConfig(me).queues;
      const refused = (queues as string[]).filter((q) => allowed.length > 0 && !allowed.includes(q));
      if (refused.length) throw new HttpError(403, `not your queue(s): ${refused.join(", ")}`);
      this.o.actions.loginQueues(me.tenant, me.agent, queues as string[]);
      return json(res, 200, { queues: this.o.actions.agentQueues(me.tenant, me.agent) });
    }
    if (method === "POST" && path === "/api/queues/logout") {
      const { queues } = (await jsonBody(req)) as { queues?: string[] };
      this.o.actions.logoutQueues(me.tenant, me.agent, Array.isArray(queues) && queues.length ? queues : undefined);
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
      return json(res, 200, { queues: this.o.actions.queues(me.tenant) });
    }

    const m = /^\/api\/sessions\/([^/]+)(?:\/([a-z-]+)(?:\/(\d+))?)?$/.exec(path);
    if (!m) throw new HttpError(404, "not found");
    const [, id, action, index] = m as unknown as [string, string, string | undefined, string | undefined];
    if (method === "GET" && action === undefined) return json(res, 200, await this.#email(me.tenant, id, me.agent));
    if (method === "GET" && action === "attachments" && index !== undefined) return this.#attachment(res, me, id, Number(index));
    if (method !== "POST") throw new HttpError(404, "not found");
    // Every action below first proves the session is this agent's, in this tenant.
    const session = await this.o.store.forAgent(me.tenant, id, me.agent);
    if (!session || !["assigned", "delivered"].includes(session.state)) throw new HttpError(404, "no such session");
    const input = (await jsonBody(req)) as Record<string, unknown>;
    switch (action) {
      case "accept":
        await this.o.actions.accept(me.tenant, me.agent, id);
        return json(res, 200, { ok: true });
      case "close": {
        const outcome = typeof input.outcome === "string" && input.outcome.trim() ? input.outcome.trim().slice(0, 64) : "closed";
        await this.o.actions.close(me.tenant, me.agent, id, outcome);
        return json(res, 200, { ok: true });
      }
      case "transfer": {
        const to = typeof input.agent === "string" ? { agent: input.agent } : typeof input.queue === "string" ? { queue: input.queue } : undefined;
        if (!to) throw new HttpError(400, "give agent or queue");
        await this.o.actions.transfer(me.tenant, me.agent, id, to);
        return json(res, 200, { ok: true });
      }
      case "reply":
      case "reply-all":
      case "forward":
        return json(res, 202, await this.#compose(me, session, action, input));
      default:
        throw new HttpError(404, "not found");
    }
  }

  async #compose(me: Principal, session: NonNullable<Awaited<ReturnType<SessionStore["forAgent"]>>>, kind: "reply" | "reply-all" | "forward", input: Record<string, unknown>): Promise<{ commandId: string }> {
    const mailbox = this.#tenant(me.tenant).mailboxes.find((mb) => mb.id === session.mailbox);
    if (!mailbox) throw new HttpError(404, "no such session");
    if (!mailbox.smtp) throw new HttpError(409, "this campaign has no outgoing server configured");
    if (kind === "forward" ? !mailbox.agentsMayForward : !mailbox.agentsMayAnswer) throw new HttpError(403, `this campaign does not allow agents to ${kind === "forward" ? "forward" : "answer"}`);
    const text = typeof input.text === "string" ? input.text : "";
    if (!text.trim()) throw new HttpError(400, "the message text is empty");
    if (text.length > 500_000) throw new HttpError(413, "the message text is too long");
    const requestId = typeof input.requestId === "string" && /^[A-Za-z0-9_-]{8,64}$/.test(input.requestId) ? input.requestId : undefined;
    if (!requestId) throw new HttpError(400, "give requestId (8-64 letters, digits, - or _): a retried click must not send twice");
    const addresses = await this.o.store.addresses(session.message_row);
    const own = mailbox.address.toLowerCase();
    let to: string[];
    let cc: string[] = [];
    if (kind === "forward") {
      to = Array.isArray(input.to) ? input.to.filter((a): a is string => typeof a === "string" && /^[^\s@<>]+@[^\s@<>]+$/.test(a)) : [];
      if (to.length === 0) throw new HttpError(400, "give to: the address(es) to forward to");
    } else {
      const replyTo = addresses.filter((a) => a.role === "reply-to").map((a) => a.address);
      to = replyTo.length ? replyTo : [session.from_address];
      if (kind === "reply-all") {
        const others = addresses.filter((a) => a.role === "to" || a.role === "cc").map((a) => a.address);
        cc = [...new Set(others.filter((a) => a.toLowerCase() !== own && !to.some((t) => t.toLowerCase() === a.toLowerCase())))];
      }
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
    await this.o.actions.send(command);
    this.stats.sendsRequested++;
    this.o.logger.info({ tenant: me.tenant, agent: me.agent, sessionId: session.id, kind, commandId }, "agent send requested");
    return { commandId };
  }

  async #email(tenant: string, id: string, agent: string | undefined): Promise<unknown> {
    const s = await this.o.store.forAgent(tenant, id, agent);
    if (!s) throw new HttpError(404, "no such session");
    const addresses = await this.o.store.addresses(s.message_row);
    const attachments = await this.o.store.attachments(s.message_row);
    const base = agent ? `/api/sessions/${s.id}/attachments` : undefined;
    const byCid = new Map(attachments.filter((a) => a.content_id).map((a) => [a.content_id!.replace(/^<|>$/g, ""), a.part_index]));
    const mailbox = this.#tenant(tenant).mailboxes.find((mb) => mb.id === s.mailbox);
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
        messageId: s.rfc_message_id,
        text: s.text_body ?? "",
        html: s.html_body ? sanitizeEmailHtml(s.html_body, (cid) => (base && byCid.has(cid) ? `${base}/${byCid.get(cid)}` : undefined)) : null,
        parseError: s.parse_error,
        attachments: attachments.map((a) => ({ index: a.part_index, name: a.original_name ?? a.stored_name, contentType: a.content_type, size: Number(a.size), inline: a.inline, url: base ? `${base}/${a.part_index}` : null })),
      },
    };
  }

  async #attachment(res: ServerResponse, me: Principal, id: string, index: number): Promise<void> {
    const s = await this.o.store.forAgent(me.tenant, id, me.agent);
    if (!s) throw new HttpError(404, "no such session");
    const a = (await this.o.store.attachments(s.message_row)).find((x) => x.part_index === index);
    if (!a) throw new HttpError(404, "no such attachment");
    const parts = resolve(s.archive_path, "parts");
    const file = resolve(parts, a.stored_name);
    if (!file.startsWith(parts + sep)) throw new HttpError(404, "no such attachment");
    const info = await stat(file).catch(() => undefined);
    if (!info) throw new HttpError(410, "the attachment's file is no longer in the archive");
    const name = (a.original_name ?? a.stored_name).replace(/["\\\r\n]/g, "_");
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

  async #login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const input = (await jsonBody(req)) as { tenant?: unknown; agent?: unknown; password?: unknown };
    const fail = () => {
      this.stats.loginsFailed++;
      return json(res, 401, { error: "unknown tenant, agent or wrong password" });
    };
    if (typeof input.tenant !== "string" || typeof input.agent !== "string" || typeof input.password !== "string") return fail();
    const tenant = this.o.config.tenants.find((t) => t.id === input.tenant);
    const agent = tenant?.agents.find((a) => a.id === input.agent);
    if (!tenant || !agent) return fail();
    let expected: string;
    try {
      expected = await resolveSecret(agent.password, this.o.env ?? process.env);
    } catch (error) {
      // The reference is named in the log; the value never is.
      this.o.logger.error({ tenant: tenant.id, agent: agent.id, problem: (error as Error).message }, "agent password cannot be resolved");
      return fail();
    }
    const digest = (s: string) => createHash("sha256").update(s).digest();
    if (!timingSafeEqual(digest(expected), digest(input.password))) {
      this.o.logger.warn({ tenant: tenant.id, agent: agent.id }, "agent login refused");
      return fail();
    }
    const token = randomBytes(32).toString("base64url");
    this.#tokens.set(token, { tenant: tenant.id, agent: agent.id, supervisor: agent.supervisor, expires: this.#now() + (this.o.tokenTtlMs ?? 12 * 3600_000) });
    this.o.logger.info({ tenant: tenant.id, agent: agent.id }, "agent logged in");
    return json(res, 200, { token, tenant: tenant.id, agent: agent.id, supervisor: agent.supervisor });
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

function json(res: ServerResponse, status: number, payload: unknown): void {
  send(res, status, "application/json; charset=utf-8", JSON.stringify(payload));
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
