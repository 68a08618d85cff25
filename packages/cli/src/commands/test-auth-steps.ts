// The checks of `postroom test-auth`, in order. Each returns verdicts; none throws. Secrets are
// used to log in and never printed: a verdict names the reference or the server's reply only.
import { certificateErrorCode, certificateExplanation } from "./test-auth-tls.js";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import {
  GoogleTokenSource,
  MicrosoftTokenSource,
  aadstsEntry,
  classifyTokenFailure,
  fillFix,
  microsoftAuthorityHost,
  microsoftScope,
  passwordRefused,
  serverSignal,
  type AccessToken,
  type FixContext,
  type GoogleServiceAccountKey,
  type MicrosoftCredentials,
} from "@postroom/token-service";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { checkClock, checkEndpoint, type Endpoint } from "./test-auth-env.js";
import { graphClaimsStep, graphMailboxSteps, type GraphCheckTarget } from "./test-auth-graph.js";
import type { Explanation, StepResult } from "./test-auth-report.js";

/** How a mailbox logs in, with secrets resolved. */
export type TargetAuth =
  | { type: "password"; username: string; password: string }
  | { type: "microsoft365"; credentials: MicrosoftCredentials }
  | { type: "google-service-account"; key: GoogleServiceAccountKey; tokenUrl?: string };

/** A mail server to log in to. */
export interface ServerTarget {
  host: string;
  port: number;
  tls: "implicit" | "starttls" | "none";
  verifyCertificate: boolean;
}

/** Everything one run checks. */
export interface AuthTarget {
  /** The mailbox address (`user=` of XOAUTH2). */
  address: string;
  auth: TargetAuth;
  /** SMTP's own credential when it differs (config `smtp.auth`). */
  smtpAuth?: TargetAuth;
  imap?: ServerTarget & { folder: string };
  pop3?: ServerTarget;
  smtp?: ServerTarget;
  /**
   * Microsoft Graph (inbound.protocol: graph or outbound: graph): the token is Graph's, its
   * permissions are checked, and the mailbox is opened through Graph instead of IMAP/POP/SMTP.
   */
  graph?: GraphCheckTarget;
  /** Send one real test message to this address (only when asked). */
  sendTo?: string;
  /** Config-sanity findings made while building the target (from the config file or the flags). */
  sanity: StepResult[];
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TIMEOUT_MS = 15_000;

/** Config sanity of Microsoft values, as an administrator types them. Pure. */
export function microsoftSanity(c: { tenantId: string; clientId: string; clientSecret?: string | undefined; scope?: string | undefined }): StepResult[] {
  const out: StepResult[] = [];
  const tenant = c.tenantId.trim().toLowerCase();
  if (["common", "organizations", "consumers"].includes(tenant)) {
    out.push({ step: "config", verdict: "fail", summary: `tenant "${c.tenantId}" is a multi-tenant alias`, explanation: { ...aadstsEntry(9001023)!, fix: aadstsEntry(9001023)!.fix } });
  } else if (!GUID.test(tenant) && !/^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(tenant)) {
    out.push({ step: "config", verdict: "fail", summary: `tenant "${c.tenantId}" is neither a GUID nor a domain`, explanation: aadstsEntry(900023)! });
  } else {
    out.push({ step: "config", verdict: "pass", summary: `tenant ${c.tenantId} is tenant-specific` });
  }
  if (!GUID.test(c.clientId.trim())) {
    out.push({ step: "config", verdict: "fail", summary: `client id "${c.clientId}" is not a GUID`, explanation: { code: "client-id", meaning: "the Application (client) ID is a GUID", fix: "copy it from Entra admin center → App registrations → your app → Overview" } });
  }
  if (c.clientSecret !== undefined && GUID.test(c.clientSecret.trim())) {
    out.push({
      step: "config",
      verdict: "warn",
      summary: "the client secret looks like a GUID: probably the Secret ID, not the secret's Value",
      explanation: { code: "secret-id", meaning: aadstsEntry(7000215)!.meaning, fix: aadstsEntry(7000215)!.fix },
    });
  }
  if (c.scope !== undefined && !c.scope.endsWith("/.default")) {
    out.push({ step: "config", verdict: "warn", summary: `scope ${c.scope} has no /.default suffix`, explanation: aadstsEntry(1002012)! });
  }
  return out;
}

/** Decodes a JWT's payload without verifying it (the tester shows what the server will see). */
export function decodeClaims(token: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

const ROLE = { imap: "IMAP.AccessAsApp", pop3: "POP.AccessAsApp", smtp: "SMTP.SendAsApp" } as const;

/** The step runner. */
export class AuthChecks {
  readonly steps: StepResult[] = [];
  #token: AccessToken | undefined;
  #fix: FixContext;
  #unreachable = new Set<string>();

  constructor(private readonly t: AuthTarget) {
    this.#fix = { mailbox: t.address, ...(t.auth.type === "microsoft365" ? { tenantId: t.auth.credentials.tenantId, appId: t.auth.credentials.clientId } : {}) };
  }

  /** Runs every requested step; returns the verdicts in order. */
  async run(): Promise<StepResult[]> {
    this.steps.push(...this.t.sanity);
    await this.#environment();
    const needsToken = this.t.auth.type !== "password" || this.t.smtpAuth?.type === "microsoft365" || this.t.smtpAuth?.type === "google-service-account";
    if (needsToken) await this.#acquire();
    if (this.t.imap) await this.#imap(this.t.imap);
    if (this.t.pop3) await this.#pop3(this.t.pop3);
    if (this.t.smtp) await this.#smtp(this.t.smtp);
    if (this.t.graph) await this.#graph(this.t.graph);
    return this.steps;
  }

  /** Opens the mailbox through Microsoft Graph (and sends with --send-to) with the token. */
  async #graph(g: GraphCheckTarget): Promise<void> {
    const why = this.#unreachable.has("Graph") ? "not tried: Microsoft Graph is unreachable" : !this.#token ? "not tried: no token" : undefined;
    if (why !== undefined) {
      this.steps.push({ step: "graph", verdict: "skip", summary: why });
      return;
    }
    this.steps.push(...(await graphMailboxSteps(g, this.#token!.token, this.t.auth.type === "microsoft365", this.#fix, this.t.sendTo)));
  }

  #oauthAuth(): TargetAuth | undefined {
    return [this.t.auth, this.t.smtpAuth].find((a) => a !== undefined && a.type !== "password");
  }

  async #environment(): Promise<void> {
    const endpoints: Endpoint[] = [];
    const oauth = this.#oauthAuth();
    let identityUrl: string | undefined;
    if (oauth?.type === "microsoft365") identityUrl = microsoftAuthorityHost(oauth.credentials);
    if (oauth?.type === "google-service-account") identityUrl = oauth.tokenUrl ?? oauth.key.token_uri ?? "https://oauth2.googleapis.com/token";
    if (identityUrl !== undefined) {
      const u = new URL(identityUrl);
      endpoints.push({ role: "identity platform", host: u.hostname, port: Number(u.port || 443), implicitTls: u.protocol === "https:" });
    }
    const server = (role: string, s: ServerTarget | undefined) =>
      s && endpoints.push({ role, host: s.host, port: s.port, implicitTls: s.tls === "implicit", verifyCertificate: s.verifyCertificate });
    server("IMAP", this.t.imap);
    server("POP3", this.t.pop3);
    server("SMTP", this.t.smtp);
    if (this.t.graph) {
      const u = new URL(this.t.graph.endpoint);
      endpoints.push({ role: "Graph", host: u.hostname, port: Number(u.port || 443), implicitTls: u.protocol === "https:" });
    }
    for (const e of endpoints) {
      const results = await checkEndpoint(e);
      this.steps.push(...results);
      if (results.some((r) => r.verdict === "fail")) this.#unreachable.add(e.role);
    }
    if (identityUrl !== undefined && !this.#unreachable.has("identity platform")) this.steps.push(await checkClock(new URL(identityUrl).origin));
  }

  async #acquire(): Promise<void> {
    const auth = this.#oauthAuth()!;
    if (this.#unreachable.has("identity platform")) {
      this.steps.push({ step: "token", verdict: "skip", summary: "not requested: the identity platform is unreachable" });
      return;
    }
    if (auth.type === "password") return;
    const what = auth.type === "microsoft365" ? `scope ${microsoftScope(auth.credentials)}` : "scope https://mail.google.com/";
    try {
      const source = auth.type === "microsoft365" ? new MicrosoftTokenSource(auth.credentials) : new GoogleTokenSource(auth.key, this.t.address, auth.tokenUrl);
      this.#token = await source.acquire();
      this.steps.push({ step: "token", verdict: "pass", summary: `access token acquired (${what}), expires ${this.#token.expiresAt.toISOString()}` });
    } catch (error) {
      const f = classifyTokenFailure(error);
      if (this.t.graph && ["AADSTS500011", "AADSTS1002012", "AADSTS70011"].includes(f.code ?? "")) {
        // The catalogue's fix names Exchange's scope; for Graph the usual cause is an app with no Graph permission at all.
        f.fix = `the app has no Microsoft Graph permission in this tenant, or the scope is wrong: Entra admin center (entra.microsoft.com) → App registrations → your app → API permissions → Add a permission → Microsoft Graph → Application permissions → Mail.ReadWrite / Mail.Send, then "Grant admin consent"; the scope must be ${this.t.graph.resource}/.default`;
      }
      this.steps.push({
        step: "token",
        verdict: "fail",
        summary: `no token: ${f.message}`,
        explanation: { code: f.code ?? "unknown", meaning: f.meaning ?? (f.kind === "transient" ? "a temporary failure" : "the identity platform refused the request"), fix: f.fix ?? "try again in a minute; if it persists, check the network path to the identity platform" },
      });
      return;
    }
    this.#claims(auth);
  }

  #claims(auth: TargetAuth): void {
    const claims = decodeClaims(this.#token!.token);
    if (!claims) {
      this.steps.push({ step: "claims", verdict: "warn", summary: "the access token is not a JWT; claims not shown" });
      return;
    }
    if (typeof claims.appid === "string") this.#fix.appId = claims.appid;
    if (typeof claims.oid === "string") this.#fix.objectId = claims.oid;
    const roles = Array.isArray(claims.roles) ? (claims.roles as unknown[]).map(String) : [];
    const exp = typeof claims.exp === "number" ? new Date(claims.exp * 1000).toISOString() : "?";
    const details = [`aud:   ${String(claims.aud)}`, `tid:   ${String(claims.tid ?? "-")}`, `appid: ${String(claims.appid ?? claims.azp ?? "-")}`, `oid:   ${String(claims.oid ?? "-")}`, `roles: ${roles.join(", ") || "(none)"}`, `exp:   ${exp}`];
    // Graph's permissions are checked even where a step of Graph's own would show them: the
    // claims name the permission to consent, Graph's 403 does not.
    if (this.t.graph && auth.type === "microsoft365") {
      this.steps.push(graphClaimsStep(claims, this.t.graph, details));
      return;
    }
    if (auth.type !== "microsoft365") {
      this.steps.push({ step: "claims", verdict: "pass", summary: "token decoded (not verified)", details });
      return;
    }
    const expectedAud = microsoftScope(auth.credentials).replace(/\/\.default$/, "");
    const needed = [this.t.imap && ROLE.imap, this.t.pop3 && ROLE.pop3, this.t.smtp && ROLE.smtp].filter((r): r is (typeof ROLE)[keyof typeof ROLE] => typeof r === "string");
    const missing = needed.filter((r) => !roles.includes(r));
    if (claims.aud !== expectedAud) {
      this.steps.push({ step: "claims", verdict: "fail", summary: `token audience is ${String(claims.aud)}, expected ${expectedAud}`, details, explanation: aadstsEntry(500011)! });
    } else if (missing.length > 0) {
      this.steps.push({
        step: "claims",
        verdict: "fail",
        summary: `token roles lack ${missing.join(", ")}`,
        details,
        explanation: { code: "roles", meaning: "the application permission is not consented, so the mail server will refuse the token", fix: `Entra admin center → App registrations → your app → API permissions → Add a permission → APIs my organization uses → Office 365 Exchange Online → Application permissions → ${missing.join(", ")}, then "Grant admin consent"` },
      });
    } else {
      this.steps.push({ step: "claims", verdict: "pass", summary: "token decoded (not verified): audience and roles as Exchange Online needs them", details });
    }
  }

  /** Explanation of a refused login, with the catalogue's fix filled from the token's claims. */
  #refusal(protocol: "imap" | "pop3" | "smtp", text: string, auth: TargetAuth): Explanation {
    const entry = auth.type === "password" ? passwordRefused() : (serverSignal(protocol, text) ?? serverSignal(protocol, protocol === "smtp" ? "535" : protocol === "pop3" ? "-ERR" : "AUTHENTICATE failed"))!;
    return { code: `${entry.code}${text ? ` (server: ${text.trim().slice(0, 160)})` : ""}`, meaning: entry.meaning, fix: fillFix(entry.fix, this.#fix) };
  }

  #credential(auth: TargetAuth): { user: string; pass?: string; accessToken?: string } | undefined {
    if (auth.type === "password") return { user: auth.username, pass: auth.password };
    return this.#token ? { user: this.t.address, accessToken: this.#token.token } : undefined;
  }

  async #imap(s: ServerTarget & { folder: string }): Promise<void> {
    const cred = this.#credential(this.t.auth);
    if (this.#unreachable.has("IMAP") || !cred) {
      this.steps.push({ step: "imap", verdict: "skip", summary: this.#unreachable.has("IMAP") ? "not tried: the IMAP server is unreachable" : "not tried: no token" });
      return;
    }
    const client = new ImapFlow({
      host: s.host,
      port: s.port,
      secure: s.tls === "implicit",
      doSTARTTLS: s.tls === "starttls" ? true : s.tls === "none" ? false : undefined,
      auth: cred.accessToken ? { user: cred.user, accessToken: cred.accessToken } : { user: cred.user, pass: cred.pass ?? "" },
      tls: { rejectUnauthorized: s.verifyCertificate },
      logger: false,
      connectionTimeout: TIMEOUT_MS,
      greetingTimeout: TIMEOUT_MS,
    } as ConstructorParameters<typeof ImapFlow>[0]);
    client.on("error", () => undefined);
    let stage = "connect";
    try {
      await client.connect();
      stage = "select";
      const box = await client.mailboxOpen(s.folder, { readOnly: true });
      this.steps.push({ step: "imap", verdict: "pass", summary: `logged in to ${s.host}:${s.port} as ${cred.user} and selected ${s.folder} (${box.exists} messages)` });
    } catch (error) {
      const e = error as Error & { authenticationFailed?: boolean; responseText?: string; response?: string; code?: string };
      const text = e.responseText ?? e.response ?? e.message;
      if (e.authenticationFailed || stage === "select") {
        const explanation = stage === "select" && !e.authenticationFailed ? { ...this.#refusal("imap", "User is authenticated but not connected.", this.t.auth), code: `select failed (server: ${text})` } : this.#refusal("imap", text, this.t.auth);
        this.steps.push({ step: "imap", verdict: "fail", summary: stage === "select" ? `logged in, but ${s.folder} could not be selected` : `${s.host}:${s.port} refused the login of ${cred.user}`, explanation });
      } else {
        this.steps.push({ step: "imap", verdict: "fail", summary: `IMAP connection failed: ${e.message}`, explanation: connectionExplanation(error, s, { code: e.code ?? "connection", meaning: "the IMAP session broke before the login finished", fix: "check host, port and TLS mode (993 implicit, 143 STARTTLS) and the server's certificate" }) });
      }
    } finally {
      await client.logout().catch(() => client.close());
    }
  }

  async #pop3(s: ServerTarget): Promise<void> {
    const cred = this.#credential(this.t.auth);
    if (this.#unreachable.has("POP3") || !cred) {
      this.steps.push({ step: "pop3", verdict: "skip", summary: this.#unreachable.has("POP3") ? "not tried: the POP3 server is unreachable" : "not tried: no token" });
      return;
    }
    let pop: Pop3 | undefined;
    try {
      pop = await Pop3.open(s);
      const reply = cred.accessToken
        ? await pop.command(`AUTH XOAUTH2 ${Buffer.from(`user=${cred.user}\x01auth=Bearer ${cred.accessToken}\x01\x01`).toString("base64")}`)
        : (await pop.command(`USER ${cred.user}`)).startsWith("+OK")
          ? await pop.command(`PASS ${cred.pass ?? ""}`)
          : "-ERR USER refused";
      // A failed SASL exchange may send a "+ <challenge>" first; answer it empty to get the verdict.
      const final = reply.startsWith("+ ") ? await pop.command("") : reply;
      if (!final.startsWith("+OK")) {
        this.steps.push({ step: "pop3", verdict: "fail", summary: `${s.host}:${s.port} refused the login of ${cred.user}`, explanation: this.#refusal("pop3", final, this.t.auth) });
        return;
      }
      const stat = await pop.command("STAT");
      this.steps.push({ step: "pop3", verdict: stat.startsWith("+OK") ? "pass" : "fail", summary: `logged in to ${s.host}:${s.port} as ${cred.user}; STAT ${stat}` });
    } catch (error) {
      this.steps.push({ step: "pop3", verdict: "fail", summary: `POP3 connection failed: ${(error as Error).message}`, explanation: connectionExplanation(error, s, { code: (error as NodeJS.ErrnoException).code ?? "connection", meaning: "the POP3 session broke before the login finished", fix: "check host, port and TLS mode (995 implicit, 110 STLS)" }) });
    } finally {
      pop?.close();
    }
  }

  async #smtp(s: ServerTarget): Promise<void> {
    const auth = this.t.smtpAuth ?? this.t.auth;
    const cred = this.#credential(auth);
    if (this.#unreachable.has("SMTP") || !cred) {
      this.steps.push({ step: "smtp", verdict: "skip", summary: this.#unreachable.has("SMTP") ? "not tried: the SMTP server is unreachable" : "not tried: no token" });
      return;
    }
    const transport = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: s.tls === "implicit",
      requireTLS: s.tls === "starttls",
      ignoreTLS: s.tls === "none",
      tls: { rejectUnauthorized: s.verifyCertificate },
      auth: cred.accessToken ? { type: "OAuth2", user: cred.user, accessToken: cred.accessToken } : { user: cred.user, pass: cred.pass ?? "" },
      connectionTimeout: TIMEOUT_MS,
      greetingTimeout: TIMEOUT_MS,
      socketTimeout: TIMEOUT_MS,
    });
    try {
      await transport.verify();
      this.steps.push({ step: "smtp", verdict: "pass", summary: `authenticated to ${s.host}:${s.port} as ${cred.user} (${cred.accessToken ? "XOAUTH2" : "password"})` });
    } catch (error) {
      const e = error as Error & { response?: string; code?: string; responseCode?: number };
      if (e.code === "EAUTH" || (e.responseCode !== undefined && e.responseCode >= 500)) {
        this.steps.push({ step: "smtp", verdict: "fail", summary: `${s.host}:${s.port} refused the login of ${cred.user}`, explanation: this.#refusal("smtp", e.response ?? e.message, auth) });
      } else {
        this.steps.push({ step: "smtp", verdict: "fail", summary: `SMTP connection failed: ${e.message}`, explanation: connectionExplanation(error, s, { code: e.code ?? "connection", meaning: "the SMTP session broke before the login finished", fix: "check host, port and TLS mode (587 STARTTLS, 465 implicit)" }) });
      }
      transport.close();
      return;
    }
    if (this.t.sendTo !== undefined) {
      try {
        const info = await transport.sendMail({ from: this.t.address, to: this.t.sendTo, subject: "Postroom test-auth", text: `This message was sent by postroom test-auth from ${this.t.address} at ${new Date().toISOString()}.` });
        this.steps.push({ step: "send", verdict: "pass", summary: `test message to ${this.t.sendTo} accepted: ${info.response}` });
      } catch (error) {
        const e = error as Error & { response?: string };
        this.steps.push({ step: "send", verdict: "fail", summary: `the test message was refused: ${e.response ?? e.message}`, explanation: { code: e.response?.slice(0, 40) ?? "send", meaning: "the server accepted the login but not the message", fix: "check that the sending address is the mailbox itself (or that SendAs is granted: Add-RecipientPermission <mailbox> -Trustee <objectId> -AccessRights SendAs)" } });
      }
    }
    transport.close();
  }
}

/** A tiny POP3 client: the tester speaks the protocol itself to show the server's exact replies. */
class Pop3 {
  #buffer = "";
  #waiters: Array<(line: string) => void> = [];

  private constructor(private socket: Socket | TLSSocket) {
    this.#attach(socket);
  }

  #attach(socket: Socket | TLSSocket): void {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.#buffer += chunk;
      let i: number;
      while ((i = this.#buffer.indexOf("\r\n")) >= 0) {
        const line = this.#buffer.slice(0, i);
        this.#buffer = this.#buffer.slice(i + 2);
        this.#waiters.shift()?.(line);
      }
    });
    socket.on("error", () => undefined);
  }

  static async open(s: ServerTarget): Promise<Pop3> {
    const socket = await new Promise<Socket | TLSSocket>((resolve, reject) => {
      const sock = s.tls === "implicit" ? tlsConnect({ host: s.host, port: s.port, rejectUnauthorized: s.verifyCertificate, servername: s.host }) : tcpConnect({ host: s.host, port: s.port });
      sock.setTimeout(TIMEOUT_MS, () => sock.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
      sock.once(s.tls === "implicit" ? "secureConnect" : "connect", () => resolve(sock));
      sock.once("error", reject);
    });
    const pop = new Pop3(socket);
    const greeting = await pop.#next();
    if (!greeting.startsWith("+OK")) throw new Error(`unexpected greeting: ${greeting}`);
    if (s.tls === "starttls") {
      const stls = await pop.command("STLS");
      if (!stls.startsWith("+OK")) throw new Error(`STLS refused: ${stls}`);
      socket.removeAllListeners("data");
      const secure = await new Promise<TLSSocket>((resolve, reject) => {
        const t = tlsConnect({ socket, rejectUnauthorized: s.verifyCertificate, servername: s.host });
        t.once("secureConnect", () => resolve(t));
        t.once("error", reject);
      });
      pop.socket = secure;
      pop.#attach(secure);
    }
    return pop;
  }

  #next(): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no answer within 15 s")), TIMEOUT_MS);
      this.#waiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }

  command(line: string): Promise<string> {
    const next = this.#next();
    this.socket.write(`${line}\r\n`);
    return next;
  }

  close(): void {
    this.socket.end("QUIT\r\n");
    this.socket.destroy();
  }
}

/** A certificate problem explained as such; any other connection failure as `otherwise`. */
function connectionExplanation(error: unknown, s: { host: string; port: number }, otherwise: Explanation): Explanation {
  const code = certificateErrorCode(error);
  return (code === undefined ? undefined : certificateExplanation(code, s.host, s.port)) ?? otherwise;
}
