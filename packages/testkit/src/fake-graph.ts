import { createHash, randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { ImapFlow, type FetchMessageObject } from "imapflow";
import type { TestServer } from "@postroom/mail-servers";
import type { FakeIdentityPlatform, GraphPermission } from "./fake-identity.js";

/** A mailbox the fake Graph serves, backed by the Dovecot account of the same name. */
export interface FakeGraphMailbox {
  /** The user principal name (compared in lower case); also the Dovecot login. */
  user: string;
  /** The Dovecot password of `user`: the fake opens the mailbox over IMAP with it. */
  imapPassword: string;
  /**
   * Client ids of apps whose app-only tokens may open this mailbox from the start (RBAC for
   * Applications / an application access policy). Change it later with {@link FakeGraph.grant}.
   */
  apps?: string[];
}

/** Options for {@link startFakeGraph}. */
export interface FakeGraphOptions {
  /** The fake identity platform: it validates bearer tokens (`validateGraph`) and lends its certificate. */
  identity: FakeIdentityPlatform;
  /** The Dovecot holding the mail (a `DovecotInfo` will do: plain IMAP on `imapPort`). */
  dovecot: {
    host: string;
    imapPort: number;
    /** Implicit TLS on `imapPort` (give Dovecot's `imapsPort` then). */
    tls?: boolean;
    /** Dovecot's certificate to trust with `tls` (its `caCertPath`); without it the certificate is not checked. */
    caCertPath?: string;
  };
  /** The mailboxes served; every other user is unknown. */
  mailboxes: FakeGraphMailbox[];
}

/** How to reach a running fake Graph. */
export interface FakeGraphInfo {
  /** `https://127.0.0.1:<port>`: the mailbox's `graph.url`. */
  url: string;
  host: string;
  port: number;
}

/** One request the fake answered. */
export interface FakeGraphRequest {
  method: string;
  /** The path without its query (tokens in `$skiptoken` / `$deltatoken` are left out). */
  path: string;
  /** The names of the query's parameters (`$deltatoken`, `$skiptoken`, ...), without their values. */
  params: string[];
  status: number;
  at: Date;
}

/** A message accepted by `sendMail`. */
export interface FakeGraphSentMail {
  /** The mailbox (UPN, lower case) that sent it. */
  user: string;
  /** The MIME message as sent (decoded from base64, or built from the JSON form). */
  mime: Buffer;
  at: Date;
}

/**
 * Graph's well-known folder names and the Dovecot folders standing for them. Dovecot's test
 * configuration has no special-use folders, so the names are plain ones, created when first used.
 */
const WELL_KNOWN: Record<string, string> = {
  inbox: "INBOX",
  sentitems: "Sent",
  archive: "Archive",
  deleteditems: "Trash",
  drafts: "Drafts",
  junkemail: "Junk",
};

/** Display names Outlook shows for the folders above. */
const DISPLAY_NAME: Record<string, string> = { INBOX: "Inbox", Sent: "Sent Items", Trash: "Deleted Items", Junk: "Junk Email" };

/** Where a message is now: a folder, its UIDVALIDITY and the message's UID there. */
interface Location {
  folder: string;
  uidValidity: bigint;
  uid: number;
}

/** What a delta or skip token carries; everything the next call needs, so the fake keeps no sync state. */
interface SyncState {
  /** The fake's token epoch: {@link FakeGraph.expireDeltaTokens} changes it, voiding every token issued. */
  e: string;
  /** "skip" (more pages of one round) or "delta" (the round is complete). */
  t: "skip" | "delta";
  /** The Dovecot folder. */
  f: string;
  /** UIDVALIDITY, as a decimal string. */
  v: string;
  /** HIGHESTMODSEQ when the round started, as a decimal string: later flag changes have a higher MODSEQ. */
  m: string;
  /** The UIDs present when the round started, as an IMAP sequence set: what the client will know. */
  k: string;
  /** Skip tokens: UIDs still to be listed as present (added or changed). */
  p?: string;
  /** Skip tokens: UIDs still to be listed as removed. */
  r?: string;
}

/** A refusal in Graph's shape; the handler turns it into `{"error":{"code","message"}}`. */
class GraphError extends Error {
  override readonly name = "GraphError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const ACCESS_DENIED = "Access is denied. Check credentials and try again.";

/** Reasons of `validateGraph` that mean "this is not a usable token" (401) rather than "not allowed" (403). */
const UNUSABLE_TOKEN = /^(not a JWT|bad signature|expired|wrong audience)/;

/** Sorted, distinct UIDs as an IMAP sequence set (`1:5,7,9:12`): tokens stay short for long runs. */
function toSequenceSet(uids: Iterable<number>): string {
  const sorted = [...new Set(uids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

function fromSequenceSet(set: string): number[] {
  const uids: number[] = [];
  for (const part of set.split(",").filter(Boolean)) {
    const [a, b] = part.split(":").map(Number);
    if (a === undefined || !Number.isInteger(a) || (b !== undefined && !Number.isInteger(b))) throw new Error(`bad sequence set ${set}`);
    for (let u = a; u <= (b ?? a); u++) uids.push(u);
  }
  return uids;
}

/** Graph's date format: ISO 8601 in UTC without milliseconds. */
function graphDate(date: Date | string | undefined): string | null {
  if (date === undefined) return null;
  const d = date instanceof Date ? date : new Date(date);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** A GUID derived from a UPN the way the fake identity platform derives a user's `oid`. */
function userObjectId(upn: string): string {
  return createHash("sha256").update(upn.toLowerCase()).digest("hex").slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
}

/**
 * Opaque ids. A message's id is its first location (folder, UIDVALIDITY, UID) in base64url, so it
 * is stable and needs no table; a move records where the id went (see {@link MailboxState}).
 */
function messageId(loc: Location): string {
  return Buffer.from(`msg\0${loc.folder}\0${loc.uidValidity}\0${loc.uid}`, "utf8").toString("base64url");
}

function parseMessageId(id: string): Location | undefined {
  const [kind, folder, uidValidity, uid] = Buffer.from(id, "base64url").toString("utf8").split("\0");
  if (kind !== "msg" || folder === undefined || !/^\d+$/.test(uidValidity ?? "") || !/^\d+$/.test(uid ?? "")) return undefined;
  return { folder, uidValidity: BigInt(uidValidity!), uid: Number(uid) };
}

function folderId(folder: string): string {
  return Buffer.from(`folder\0${folder}`, "utf8").toString("base64url");
}

/** A well-known name (any case) or a folder id of this fake → the Dovecot folder; undefined otherwise. */
function resolveFolder(segment: string): string | undefined {
  const known = WELL_KNOWN[segment.toLowerCase()];
  if (known !== undefined) return known;
  const [kind, folder] = Buffer.from(segment, "base64url").toString("utf8").split("\0");
  return kind === "folder" && folder !== undefined && folder !== "" ? folder : undefined;
}

/** The `odata.maxpagesize` preference (default 10, as Graph's for messages; at most 1000). */
function pageSize(prefer: string | undefined): number {
  const asked = Number(/odata\.maxpagesize\s*=\s*(\d+)/i.exec(prefer ?? "")?.[1] ?? 10);
  return Math.min(Math.max(asked, 1), 1000);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** RFC 2047 encoding for a header value that is not plain ASCII. */
function encodeWord(text: string): string {
  return /^[\x20-\x7e]*$/.test(text) ? text : `=?UTF-8?B?${Buffer.from(text, "utf8").toString("base64")}?=`;
}

interface GraphRecipient {
  emailAddress?: { address?: string; name?: string };
}

/** The MIME message of sendMail's JSON form (plain or HTML body, recipients, subject): enough for tests. */
function mimeFromJson(from: string, message: Record<string, unknown>): Buffer {
  const list = (value: unknown) =>
    (Array.isArray(value) ? (value as GraphRecipient[]) : [])
      .map((r) => r.emailAddress?.address)
      .filter((a): a is string => typeof a === "string" && a !== "");
  const to = list(message.toRecipients);
  const cc = list(message.ccRecipients);
  if (to.length + cc.length + list(message.bccRecipients).length === 0) throw new GraphError(400, "ErrorInvalidRecipients", "At least one recipient isn't valid., A message can't be sent because it contains no recipients.");
  const body = (message.body ?? {}) as { contentType?: string; content?: string };
  const html = String(body.contentType ?? "text").toLowerCase() === "html";
  const lines = [
    `From: ${from}`,
    `To: ${to.join(", ")}`,
    ...(cc.length > 0 ? [`Cc: ${cc.join(", ")}`] : []),
    `Subject: ${encodeWord(String(message.subject ?? ""))}`,
    `Date: ${new Date().toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: <${randomUUID()}@fake-graph.test>`,
    "MIME-Version: 1.0",
    `Content-Type: text/${html ? "html" : "plain"}; charset=utf-8`,
    "Content-Transfer-Encoding: base64",
    "",
    ...(Buffer.from(String(body.content ?? ""), "utf8").toString("base64").match(/.{1,76}/g) ?? []),
    "",
  ];
  return Buffer.from(lines.join("\r\n"), "utf8");
}

/** sendMail's MIME form: a base64 body that must decode to something with a header. */
function mimeFromBase64(text: string): Buffer {
  const compact = text.replace(/\s+/g, "");
  if (compact === "" || compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) {
    throw new GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.");
  }
  const mime = Buffer.from(compact, "base64");
  // A header field name is printable ASCII without ":" (RFC 5322 2.2), followed by ":".
  if (!/^[\x21-\x39\x3b-\x7e]+:/.test(mime.subarray(0, 1000).toString("latin1"))) {
    throw new GraphError(400, "ErrorMimeContentInvalid", "The MIME content is invalid: it does not start with a header.");
  }
  return mime;
}

/** What the fake knows of one mailbox beyond Dovecot's store. */
interface MailboxState {
  config: FakeGraphMailbox;
  /** Lower-case UPN. */
  upn: string;
  /** The user's object id (as the identity platform would give it), accepted in place of the UPN. */
  objectId: string;
  /** App ids allowed to open the mailbox with app-only tokens. */
  grants: Set<string>;
  /** `disableRest`: the mailbox answers MailboxNotEnabledForRESTAPI. */
  restDisabled: boolean;
  /**
   * Ids of moved messages: where each now is, and the reverse (location key → id). A moved
   * message gets a new UID in its new folder; these keep its id, as Graph's ImmutableId does.
   * Kept in memory: a fake restarted forgets them, which no test needs.
   */
  movedTo: Map<string, Location>;
  idAt: Map<string, string>;
}

const locationKey = (loc: Location) => `${loc.folder}\0${loc.uidValidity}\0${loc.uid}`;

/**
 * A fake Microsoft Graph for the mail subset Postroom uses (delta queries on a folder, `$value`,
 * isRead, move, delete, sendMail), over real HTTPS with the identity platform's certificate,
 * backed by a real Dovecot: every Graph mailbox is the Dovecot account of the same name, opened
 * over IMAP per request. Tests add mail with the Dovecot helpers and see flags change there.
 *
 * Delta queries are built on IMAP's own sync facts: UIDVALIDITY, UIDs and CONDSTORE's MODSEQ
 * (imapflow enables CONDSTORE itself and Dovecot supports it without configuration). A token
 * carries the folder, its UIDVALIDITY, the HIGHESTMODSEQ and the UIDs the client has seen; the
 * next round lists UIDs not seen before or with a higher MODSEQ as present, and UIDs seen but gone
 * as removed. Keeping the seen UIDs in the token (compressed as a sequence set) was chosen over
 * QRESYNC's VANISHED: it needs nothing of the server beyond CONDSTORE and keeps the fake stateless.
 */
export class FakeGraph implements TestServer<FakeGraphInfo> {
  readonly name = "fake-graph";
  /** Every request answered, in order. */
  readonly requests: FakeGraphRequest[] = [];
  /** Every message accepted by sendMail, in order. */
  readonly sent: FakeGraphSentMail[] = [];
  private readonly options: FakeGraphOptions;
  private readonly mailboxes = new Map<string, MailboxState>();
  private epoch = randomUUID();
  private throttled = { count: 0, retryAfterSeconds: 0 };
  private server: Server | undefined;
  private current: FakeGraphInfo | undefined;
  private dovecotCa: Buffer | undefined;

  constructor(options: FakeGraphOptions) {
    this.options = options;
    for (const m of options.mailboxes) {
      const upn = m.user.toLowerCase();
      this.mailboxes.set(upn, { config: m, upn, objectId: userObjectId(upn), grants: new Set(m.apps ?? []), restDisabled: false, movedTo: new Map(), idAt: new Map() });
    }
  }

  /** Connection info; throws before `start()`. */
  get info(): FakeGraphInfo {
    if (this.current === undefined) throw new Error("fake Graph is not started");
    return this.current;
  }

  /** `https://127.0.0.1:<port>`, the base every Graph URL starts with (then `/v1.0/...`). */
  get url(): string {
    return this.info.url;
  }

  async start(): Promise<FakeGraphInfo> {
    if (this.current !== undefined) return this.current;
    const idp = this.options.identity.info;
    const [cert, key] = await Promise.all([readFile(idp.serverCertPath), readFile(idp.serverKeyPath)]);
    if (this.options.dovecot.caCertPath !== undefined) this.dovecotCa = await readFile(this.options.dovecot.caCertPath);
    const server = createServer({ cert, key }, (req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: "InternalServerError", message: (error as Error).message } }));
      });
    });
    // Port 0: the kernel picks a free port at bind time, so no race with other fixtures.
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    this.server = server;
    const { port } = server.address() as AddressInfo;
    this.current = { url: `https://127.0.0.1:${port}`, host: "127.0.0.1", port };
    return this.current;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.current = undefined;
    if (server !== undefined) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  /** Lets app `appId` open `user`'s mailbox with app-only tokens (RBAC for Applications). */
  grant(user: string, appId: string): void {
    this.mailbox(user).grants.add(appId);
  }

  /** Takes the grant back: the app's requests answer 403 ErrorAccessDenied. */
  revoke(user: string, appId: string): void {
    this.mailbox(user).grants.delete(appId);
  }

  /** REST access turned off for the mailbox (as for an on-premises or inactive one): 404 MailboxNotEnabledForRESTAPI. */
  disableRest(user: string): void {
    this.mailbox(user).restDisabled = true;
  }

  /** Undoes {@link disableRest}. */
  enableRest(user: string): void {
    this.mailbox(user).restDisabled = false;
  }

  /** The next `count` requests answer 429 ApplicationThrottled with `Retry-After: retryAfterSeconds`. */
  throttle(count: number, retryAfterSeconds: number): void {
    this.throttled = { count, retryAfterSeconds };
  }

  /** Every delta and skip token issued so far answers 410 syncStateNotFound; clients must sync afresh. */
  expireDeltaTokens(): void {
    this.epoch = randomUUID();
  }

  private mailbox(user: string): MailboxState {
    const state = this.mailboxes.get(user.toLowerCase());
    if (state === undefined) throw new Error(`the fake Graph serves no mailbox ${user}`);
    return state;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    const method = req.method ?? "GET";
    const requestId = randomUUID();
    res.on("finish", () => this.requests.push({ method, path: url.pathname, params: [...url.searchParams.keys()], status: res.statusCode, at: new Date() }));
    const headers = { "request-id": requestId, "client-request-id": String(req.headers["client-request-id"] ?? requestId), date: new Date().toUTCString() };
    try {
      if (this.throttled.count > 0) {
        this.throttled.count--;
        throw new GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", { "retry-after": String(this.throttled.retryAfterSeconds) });
      }
      const answer = await this.route(method, url, req);
      if (answer.status === 204 || answer.status === 202) {
        res.writeHead(answer.status, headers);
        res.end();
      } else if (Buffer.isBuffer(answer.body)) {
        res.writeHead(answer.status, { ...headers, "content-type": "text/plain", "content-length": String(answer.body.length) });
        res.end(answer.body);
      } else {
        res.writeHead(answer.status, { ...headers, ...answer.headers, "content-type": "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8" });
        res.end(JSON.stringify(answer.body));
      }
    } catch (error) {
      const e = error instanceof GraphError ? error : new GraphError(500, "InternalServerError", (error as Error).message);
      res.writeHead(e.status, { ...headers, ...e.headers, "content-type": "application/json; charset=utf-8" });
      res.end(JSON.stringify({ error: { code: e.code, message: e.message, innerError: { date: graphDate(new Date()), "request-id": requestId, "client-request-id": headers["client-request-id"] } } }));
    }
  }

  private async route(method: string, url: URL, req: IncomingMessage): Promise<{ status: number; body?: unknown; headers?: Record<string, string> }> {
    let parts: string[];
    try {
      parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      throw new GraphError(400, "BadRequest", "Resource not found for the segment.");
    }
    if (parts[0] !== "v1.0" || parts[1] !== "users" || parts[2] === undefined) throw new GraphError(400, "BadRequest", `Resource not found for the segment '${parts[1] ?? ""}'.`);
    const rest = parts.slice(3);
    const path = rest.join("/");
    const is = (m: string, pattern: RegExp) => method === m && pattern.test(path);
    let permission: GraphPermission | "either";
    if (is("POST", /^sendMail$/)) permission = "Mail.Send";
    else if (is("GET", /^$/)) permission = "either"; // a connection test of a send-only app reads the user too
    else if (is("GET", /^mailFolders\/[^/]+(\/messages(\/delta)?)?$/) || is("GET", /^messages\/[^/]+(\/\$value)?$/) || is("PATCH", /^messages\/[^/]+$/) || is("DELETE", /^messages\/[^/]+$/) || is("POST", /^messages\/[^/]+\/move$/)) {
      permission = "Mail.ReadWrite";
    } else {
      throw new GraphError(400, "BadRequest", `Resource not found for the segment '${rest.at(-1) ?? parts[2]}'.`);
    }
    const mailbox = this.authorise(req, parts[2], permission);

    if (path === "") return { status: 200, body: { "@odata.context": `${this.url}/v1.0/$metadata#users/$entity`, id: mailbox.objectId, userPrincipalName: mailbox.config.user, mail: mailbox.config.user, displayName: mailbox.config.user } };
    if (rest[0] === "sendMail") return this.sendMail(mailbox, req);
    if (rest[0] === "mailFolders") {
      const folder = resolveFolder(rest[1]!);
      if (folder === undefined) throw new GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.");
      if (rest[2] === "messages" && rest[3] === "delta") return this.delta(mailbox, folder, parts, url, String(req.headers.prefer ?? ""));
      if (rest[2] === "messages") return this.list(mailbox, folder, url);
      return this.folder(mailbox, folder);
    }
    const id = rest[1]!;
    if (rest[2] === "$value") return this.value(mailbox, id);
    if (rest[2] === "move") {
      const destination = (await this.jsonBody(req)).destinationId;
      const folder = typeof destination === "string" ? resolveFolder(destination) : undefined;
      if (folder === undefined) throw new GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.");
      return { status: 201, body: await this.move(mailbox, id, folder) };
    }
    if (method === "PATCH") return { status: 200, body: await this.update(mailbox, id, await this.jsonBody(req)) };
    if (method === "DELETE") {
      await this.remove(mailbox, id);
      return { status: 204 };
    }
    return { status: 200, body: await this.message(mailbox, id) };
  }

  /**
   * Checks the bearer token the way Graph does, in Graph's order: a token that is not usable (401),
   * the user (404), the permission (403), then Exchange's own rules: the app's mailbox grant (403)
   * and whether the mailbox takes REST calls (404).
   */
  private authorise(req: IncomingMessage, segment: string, permission: GraphPermission | "either"): MailboxState {
    const token = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
    if (token === undefined) throw new GraphError(401, "InvalidAuthenticationToken", "Access token is empty.");
    let name = segment;
    if (segment.toLowerCase() === "me") {
      // The claims are read unverified only to learn the user; validateGraph checks them next.
      const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8") || "{}") as Record<string, unknown>;
      if (claims.idtyp !== "user") throw new GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.");
      name = String(claims.upn ?? "");
    }
    const mailbox = this.mailboxes.get(name.toLowerCase()) ?? [...this.mailboxes.values()].find((m) => m.objectId === name.toLowerCase());
    const identity = this.options.identity;
    const check = (p: GraphPermission) => identity.validateGraph(token, mailbox?.config.user ?? name, p);
    let result = check(permission === "either" ? "Mail.ReadWrite" : permission);
    if (!result.ok && permission === "either") result = check("Mail.Send");
    if (!result.ok && UNUSABLE_TOKEN.test(result.reason ?? "")) {
      throw new GraphError(401, "InvalidAuthenticationToken", result.reason === "expired" ? "Lifetime validation failed, the token is expired." : `Access token validation failure: ${result.reason}.`);
    }
    if (mailbox === undefined) throw new GraphError(404, "ErrorInvalidUser", `The requested user '${segment}' is invalid.`);
    if (!result.ok) throw new GraphError(403, "ErrorAccessDenied", ACCESS_DENIED);
    if (result.claims?.idtyp !== "user" && !mailbox.grants.has(String(result.claims?.appid ?? ""))) throw new GraphError(403, "ErrorAccessDenied", ACCESS_DENIED);
    if (mailbox.restDisabled) throw new GraphError(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.");
    return mailbox;
  }

  private async jsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
    const text = (await readBody(req)).toString("utf8");
    try {
      const value = JSON.parse(text === "" ? "{}" : text) as unknown;
      if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // answered below
    }
    throw new GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.");
  }

  /** Runs `fn` on a fresh IMAP session of the mailbox, logged out afterwards (also on error). */
  private async imap<T>(mailbox: MailboxState, fn: (client: ImapFlow) => Promise<T>): Promise<T> {
    const d = this.options.dovecot;
    const client = new ImapFlow({
      host: d.host,
      port: d.imapPort,
      secure: d.tls === true,
      doSTARTTLS: false,
      auth: { user: mailbox.config.user, pass: mailbox.config.imapPassword },
      logger: false,
      // Loopback only: without Dovecot's certificate there is nothing to check it against.
      ...(d.tls === true ? { tls: this.dovecotCa === undefined ? { rejectUnauthorized: false } : { ca: this.dovecotCa } } : {}),
    });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.logout().catch(() => client.close());
    }
  }

  /** Selects `folder` (creating it first unless it is INBOX) and runs `fn` while it is selected. */
  private async inFolder<T>(client: ImapFlow, folder: string, fn: (box: { uidValidity: bigint; highestModseq: bigint | undefined; exists: number }) => Promise<T>): Promise<T> {
    if (folder.toUpperCase() !== "INBOX") await client.mailboxCreate(folder);
    const lock = await client.getMailboxLock(folder);
    try {
      const box = client.mailbox;
      if (box === false) throw new Error(`could not select ${folder}`);
      return await fn({ uidValidity: box.uidValidity, highestModseq: box.highestModseq, exists: box.exists });
    } finally {
      lock.release();
    }
  }

  private idOf(mailbox: MailboxState, loc: Location): string {
    return mailbox.idAt.get(locationKey(loc)) ?? messageId(loc);
  }

  private locate(mailbox: MailboxState, id: string): Location {
    const loc = mailbox.movedTo.get(id) ?? parseMessageId(id);
    if (loc === undefined) throw new GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.");
    return loc;
  }

  private toJson(mailbox: MailboxState, folder: string, uidValidity: bigint, m: FetchMessageObject): Record<string, unknown> {
    const env = m.envelope;
    const address = (a: { name?: string; address?: string } | undefined) => (a === undefined ? undefined : { emailAddress: { name: a.name ?? a.address ?? "", address: a.address ?? "" } });
    const internal = m.internalDate === undefined ? undefined : new Date(m.internalDate);
    return {
      "@odata.etag": `W/"${m.modseq ?? 0n}"`,
      id: this.idOf(mailbox, { folder, uidValidity, uid: m.uid }),
      createdDateTime: graphDate(internal),
      receivedDateTime: graphDate(internal),
      sentDateTime: graphDate(env?.date ?? internal),
      internetMessageId: env?.messageId ?? null,
      subject: env?.subject ?? "",
      isRead: m.flags?.has("\\Seen") ?? false,
      isDraft: m.flags?.has("\\Draft") ?? false,
      flag: { flagStatus: m.flags?.has("\\Flagged") ? "flagged" : "notFlagged" },
      parentFolderId: folderId(folder),
      from: address(env?.from?.[0]) ?? null,
      toRecipients: (env?.to ?? []).map(address),
    };
  }

  private static readonly FIELDS = { uid: true, flags: true, envelope: true, internalDate: true } as const;

  /** Reads one message's JSON in its current folder, or 404 ErrorItemNotFound. */
  private async fetchJson(client: ImapFlow, mailbox: MailboxState, loc: Location): Promise<Record<string, unknown>> {
    return this.inFolder(client, loc.folder, async (box) => {
      if (box.uidValidity !== loc.uidValidity) throw notFound();
      const m = await client.fetchOne(String(loc.uid), FakeGraph.FIELDS, { uid: true });
      if (m === false) throw notFound();
      return this.toJson(mailbox, loc.folder, box.uidValidity, m);
    });
  }

  private message(mailbox: MailboxState, id: string): Promise<Record<string, unknown>> {
    const loc = this.locate(mailbox, id);
    return this.imap(mailbox, (client) => this.fetchJson(client, mailbox, loc));
  }

  /**
   * A folder's messages, for the one filter Postroom uses: `internetMessageId eq '<id>'` (finding
   * a sent message in Sent Items). Any other `$filter` is refused as Graph refuses an unsupported one.
   */
  private async list(mailbox: MailboxState, folder: string, url: URL): Promise<{ status: number; body: unknown }> {
    const filter = url.searchParams.get("$filter") ?? "";
    const wanted = /^internetMessageId eq '((?:[^']|'')*)'$/.exec(filter.trim())?.[1]?.replaceAll("''", "'");
    if (filter !== "" && wanted === undefined) throw new GraphError(400, "ErrorInvalidProperty", "The filter is not supported by this test server.");
    const value = await this.imap(mailbox, (client) =>
      this.inFolder(client, folder, async (box) => {
        if (box.exists === 0) return [];
        const uids = wanted === undefined ? undefined : await client.search({ header: { "message-id": wanted } }, { uid: true });
        if (uids !== undefined && (uids === false || uids.length === 0)) return [];
        const out: Record<string, unknown>[] = [];
        for await (const m of client.fetch(uids === undefined ? "1:*" : uids.join(","), FakeGraph.FIELDS, { uid: true })) {
          const json = this.toJson(mailbox, folder, box.uidValidity, m);
          if (wanted === undefined || json.internetMessageId === wanted) out.push(json);
        }
        return out;
      }),
    );
    return { status: 200, body: { "@odata.context": `${this.url}/v1.0/$metadata#users('${mailbox.config.user}')/mailFolders('${folderId(folder)}')/messages`, value } };
  }

  /** `$value`: the stored MIME bytes, untouched (BODY.PEEK[], so reading does not set \Seen). */
  private async value(mailbox: MailboxState, id: string): Promise<{ status: number; body: Buffer }> {
    const loc = this.locate(mailbox, id);
    const source = await this.imap(mailbox, (client) =>
      this.inFolder(client, loc.folder, async (box) => {
        if (box.uidValidity !== loc.uidValidity) throw notFound();
        const m = await client.fetchOne(String(loc.uid), { uid: true, source: true }, { uid: true });
        if (m === false || m.source === undefined) throw notFound();
        return m.source;
      }),
    );
    return { status: 200, body: source };
  }

  /** PATCH: `isRead` maps to \Seen; other properties are accepted and ignored. */
  private async update(mailbox: MailboxState, id: string, changes: Record<string, unknown>): Promise<Record<string, unknown>> {
    const loc = this.locate(mailbox, id);
    return this.imap(mailbox, async (client) => {
      if (typeof changes.isRead === "boolean") {
        const isRead = changes.isRead;
        await this.inFolder(client, loc.folder, async (box) => {
          if (box.uidValidity !== loc.uidValidity || (await client.fetchOne(String(loc.uid), { uid: true }, { uid: true })) === false) throw notFound();
          if (isRead) await client.messageFlagsAdd(String(loc.uid), ["\\Seen"], { uid: true });
          else await client.messageFlagsRemove(String(loc.uid), ["\\Seen"], { uid: true });
        });
      }
      return this.fetchJson(client, mailbox, loc);
    });
  }

  /**
   * IMAP MOVE into `destination`. The message gets a new UID there; its id stays the same (as with
   * Graph's ImmutableId) because the fake remembers where the id went, from the COPYUID Dovecot answers.
   */
  private async move(mailbox: MailboxState, id: string, destination: string): Promise<Record<string, unknown>> {
    const loc = this.locate(mailbox, id);
    return this.imap(mailbox, async (client) => {
      if (loc.folder === destination) return this.fetchJson(client, mailbox, loc);
      if (destination.toUpperCase() !== "INBOX") await client.mailboxCreate(destination);
      const moved = await this.inFolder(client, loc.folder, async (box) => {
        if (box.uidValidity !== loc.uidValidity || (await client.fetchOne(String(loc.uid), { uid: true }, { uid: true })) === false) throw notFound();
        const result = await client.messageMove(String(loc.uid), destination, { uid: true });
        const uid = result === false ? undefined : result.uidMap?.get(loc.uid);
        if (result === false || uid === undefined || result.uidValidity === undefined) throw new Error(`MOVE to ${destination} answered no COPYUID`);
        return { folder: destination, uidValidity: result.uidValidity, uid } satisfies Location;
      });
      // The old location keeps its entry: a delta of the old folder names the message as removed
      // by this same id, and UIDs are never reused under one UIDVALIDITY.
      const key = this.idOf(mailbox, loc);
      mailbox.movedTo.set(key, moved);
      mailbox.idAt.set(locationKey(moved), key);
      return this.fetchJson(client, mailbox, moved);
    });
  }

  /** Graph's DELETE moves to Deleted Items; deleting from Deleted Items removes the message for good. */
  private async remove(mailbox: MailboxState, id: string): Promise<void> {
    const loc = this.locate(mailbox, id);
    if (loc.folder !== WELL_KNOWN.deleteditems) {
      await this.move(mailbox, id, WELL_KNOWN.deleteditems!);
      return;
    }
    await this.imap(mailbox, (client) =>
      this.inFolder(client, loc.folder, async (box) => {
        if (box.uidValidity !== loc.uidValidity || (await client.fetchOne(String(loc.uid), { uid: true }, { uid: true })) === false) throw notFound();
        await client.messageDelete(String(loc.uid), { uid: true });
      }),
    );
  }

  /** GET mailFolders/{folder}: counts from IMAP STATUS. */
  private async folder(mailbox: MailboxState, folder: string): Promise<{ status: number; body: unknown }> {
    const status = await this.imap(mailbox, async (client) => {
      if (folder.toUpperCase() !== "INBOX") await client.mailboxCreate(folder);
      return client.status(folder, { messages: true, unseen: true });
    });
    if (status === false) throw notFound();
    return {
      status: 200,
      body: {
        "@odata.context": `${this.url}/v1.0/$metadata#users('${mailbox.config.user}')/mailFolders/$entity`,
        id: folderId(folder),
        displayName: DISPLAY_NAME[folder] ?? folder,
        parentFolderId: folderId(""),
        childFolderCount: 0,
        unreadItemCount: status.unseen ?? 0,
        totalItemCount: status.messages ?? 0,
        isHidden: false,
      },
    };
  }

  /**
   * sendMail. The MIME form (`text/plain`, base64) is what Postroom uses; the JSON form is built
   * into MIME. Real Graph saves a MIME-form message to Sent Items; the JSON form does so unless
   * `saveToSentItems` is false. Either way the message is recorded in {@link sent}.
   */
  private async sendMail(mailbox: MailboxState, req: IncomingMessage): Promise<{ status: number }> {
    const type = String(req.headers["content-type"] ?? "").toLowerCase();
    let mime: Buffer;
    let save = true;
    if (type.startsWith("application/json")) {
      const body = await this.jsonBody(req);
      if (typeof body.message !== "object" || body.message === null) throw new GraphError(400, "ErrorInvalidRequest", "The message is missing.");
      mime = mimeFromJson(mailbox.config.user, body.message as Record<string, unknown>);
      save = body.saveToSentItems !== false;
    } else if (type.startsWith("text/plain")) {
      mime = mimeFromBase64((await readBody(req)).toString("latin1"));
    } else {
      throw new GraphError(415, "UnsupportedMediaType", `Content type '${type}' is not supported; send JSON or a base64 MIME message as text/plain.`);
    }
    if (save) await this.imap(mailbox, async (client) => {
      await client.mailboxCreate(WELL_KNOWN.sentitems!);
      await client.append(WELL_KNOWN.sentitems!, mime, ["\\Seen"]);
    });
    this.sent.push({ user: mailbox.upn, mime, at: new Date() });
    return { status: 202 };
  }

  private encodeToken(state: Omit<SyncState, "e">): string {
    return Buffer.from(JSON.stringify({ e: this.epoch, ...state }), "utf8").toString("base64url");
  }

  private decodeToken(token: string, kind: SyncState["t"], folder: string): SyncState {
    let state: SyncState;
    try {
      state = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as SyncState;
    } catch {
      throw new GraphError(400, "BadRequest", "The delta token is malformed.");
    }
    if (typeof state !== "object" || state === null || state.t !== kind || typeof state.k !== "string") throw new GraphError(400, "BadRequest", "The delta token is malformed.");
    if (state.e !== this.epoch) throw syncStateNotFound();
    if (state.f !== folder) throw new GraphError(400, "BadRequest", "The delta token belongs to another folder.");
    return state;
  }

  /**
   * GET mailFolders/{folder}/messages/delta. A round (first sync, or one deltatoken's changes) is
   * worked out on its first page and carried in the skip tokens: which UIDs are still to list as
   * present and as removed, and the baseline (HIGHESTMODSEQ and UIDs) its final deltaLink holds.
   * Pages read the current state of their UIDs, so a message that changes between pages is shown
   * as it is now, and may be shown again next round: Graph also allows repeats.
   */
  private async delta(mailbox: MailboxState, folder: string, parts: string[], url: URL, prefer: string): Promise<{ status: number; body: unknown; headers: Record<string, string> }> {
    const size = pageSize(prefer);
    const skipToken = url.searchParams.get("$skiptoken");
    const deltaToken = url.searchParams.get("$deltatoken");
    const base = `${this.url}/${parts.map(encodeURIComponent).join("/")}`;
    const page = await this.imap(mailbox, (client) =>
      this.inFolder(client, folder, async (box) => {
        let round: SyncState;
        if (skipToken !== null) {
          round = this.decodeToken(skipToken, "skip", folder);
          if (round.v !== String(box.uidValidity)) throw syncStateNotFound();
        } else {
          if (box.highestModseq === undefined) throw new Error("Dovecot reported no HIGHESTMODSEQ: CONDSTORE is needed for delta queries");
          const current = box.exists === 0 ? [] : ((await client.search({ all: true }, { uid: true })) || []);
          let present = current;
          let removed: number[] = [];
          if (deltaToken !== null) {
            const last = this.decodeToken(deltaToken, "delta", folder);
            if (last.v !== String(box.uidValidity)) throw syncStateNotFound();
            const known = new Set(fromSequenceSet(last.k));
            const now = new Set(current);
            const stillThere = current.filter((u) => known.has(u));
            const changed =
              stillThere.length === 0 ? [] : (await client.fetchAll(toSequenceSet(stillThere), { uid: true }, { uid: true, changedSince: BigInt(last.m) })).map((m) => m.uid);
            present = [...current.filter((u) => !known.has(u)), ...changed];
            removed = [...known].filter((u) => !now.has(u));
          }
          round = { e: this.epoch, t: "skip", f: folder, v: String(box.uidValidity), m: String(box.highestModseq), k: toSequenceSet(current), p: toSequenceSet(present), r: toSequenceSet(removed) };
        }
        const present = fromSequenceSet(round.p ?? "");
        const removed = fromSequenceSet(round.r ?? "");
        const shown = present.slice(0, size);
        const gone = removed.slice(0, size - shown.length);
        const messages = shown.length === 0 ? [] : await client.fetchAll(toSequenceSet(shown), FakeGraph.FIELDS, { uid: true });
        messages.sort((a, b) => a.uid - b.uid);
        const value: unknown[] = messages.map((m) => this.toJson(mailbox, folder, box.uidValidity, m));
        for (const uid of gone) value.push({ id: this.idOf(mailbox, { folder, uidValidity: box.uidValidity, uid }), "@removed": { reason: "deleted" } });
        const left = { p: toSequenceSet(present.slice(shown.length)), r: toSequenceSet(removed.slice(gone.length)) };
        const more = left.p !== "" || left.r !== "";
        const link = more
          ? { "@odata.nextLink": `${base}?$skiptoken=${this.encodeToken({ t: "skip", f: folder, v: round.v, m: round.m, k: round.k, ...left })}` }
          : { "@odata.deltaLink": `${base}?$deltatoken=${this.encodeToken({ t: "delta", f: folder, v: round.v, m: round.m, k: round.k })}` };
        return { "@odata.context": `${this.url}/v1.0/$metadata#Collection(message)`, value, ...link };
      }),
    );
    return { status: 200, body: page, headers: { "preference-applied": `odata.maxpagesize=${size}` } };
  }
}

function notFound(): GraphError {
  return new GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.");
}

function syncStateNotFound(): GraphError {
  return new GraphError(410, "syncStateNotFound", "The sync state generation is not found: the delta token has expired or the folder changed. Synchronise again without a token.");
}

/** Starts a fake Graph on a free loopback port (see {@link FakeGraph}); `stop()` it when done. */
export async function startFakeGraph(options: FakeGraphOptions): Promise<FakeGraph> {
  const graph = new FakeGraph(options);
  await graph.start();
  return graph;
}
