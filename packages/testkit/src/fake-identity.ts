import { createHash, createPublicKey, generateKeyPairSync, randomUUID, sign, verify, X509Certificate, constants, type KeyObject } from "node:crypto";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import { join } from "node:path";
import { promisify } from "node:util";
import { findBinary, freePort, tempDir, type TempDir, type TestServer } from "@postroom/mail-servers";

const run = promisify(execFile);

/** Exchange Online's resource; the audience of every token the fake platform issues by default. */
export const EXCHANGE_AUDIENCE = "https://outlook.office365.com";

/**
 * Microsoft Graph's resource: the audience of tokens asked for with `https://graph.microsoft.com/.default`
 * (app-only) or with Graph's delegated scopes (`https://graph.microsoft.com/Mail.ReadWrite`).
 */
export const GRAPH_AUDIENCE = "https://graph.microsoft.com";

/** The Graph permissions the fake Graph checks: reading and changing mail, and sending it. */
export type GraphPermission = "Mail.ReadWrite" | "Mail.Send";

/** The application permission each protocol needs, as Exchange Online checks it. */
export const ROLE_FOR_SERVICE: Record<string, string> = {
  imap: "IMAP.AccessAsApp",
  pop3: "POP.AccessAsApp",
  smtp: "SMTP.SendAsApp",
};

/** An app registration (with its service principal) in one tenant of the fake platform. */
export interface FakeApp {
  /** Directory (tenant) id the app lives in. */
  tenantId: string;
  /** Application (client) id. */
  clientId: string;
  /** The service principal's object id (the Enterprise application page): the token's `oid`. */
  objectId?: string;
  /** Client secrets: the value, and whether it has expired. */
  secrets?: Array<{ value: string; expired?: boolean }>;
  /** PEM certificates uploaded to the app (client-assertion credentials). */
  certificates?: string[];
  /** Application permissions consented on Exchange Online (the `roles` of an Exchange token). */
  roles?: string[];
  /**
   * Application permissions consented on Microsoft Graph (the `roles` of a Graph token), e.g.
   * `["Mail.ReadWrite", "Mail.Send"]`. Absent means the app has no Graph permissions at all: a
   * client-credentials request for Graph is then refused as for an unknown resource (AADSTS500011),
   * which is what the tests written before Graph existed expect.
   */
  graphRoles?: string[];
  /** Disabled apps are refused with AADSTS7000112. */
  disabled?: boolean;
  /** A public client ("Allow public client flows"): may use the device-code flow without a secret. */
  publicClient?: boolean;
}

/** A device-code sign-in the platform handed out, and what became of it. */
export interface FakeDeviceCode {
  userCode: string;
  clientId: string;
  /** The authority's tenant segment (`consumers`, `organizations`, an id). */
  tenant: string;
  scopes: string[];
  expiresAt: number;
  /** The account that approved it (`approveDeviceCode`), once someone did. */
  approvedBy?: string;
  /** Set when the platform answered the poll with tokens (a code is redeemed once). */
  redeemed?: boolean;
  /** Polls answered `authorization_pending`. */
  pendingPolls: number;
}

/** The delegated scopes a protocol needs in a user token, as Exchange Online checks them. */
export const SCOPE_FOR_SERVICE: Record<string, string> = {
  imap: "IMAP.AccessAsUser.All",
  pop3: "POP.AccessAsUser.All",
  smtp: "SMTP.Send",
};

/** The resource of delegated Exchange scopes (`https://outlook.office.com/IMAP.AccessAsUser.All`). */
export const OUTLOOK_AUDIENCE = "https://outlook.office.com";

/** The tenant id Microsoft gives every consumer (Outlook.com) account. */
export const CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad";

/** A Google service account with domain-wide delegation. */
export interface FakeServiceAccount {
  /** `client_email` of the JSON key. */
  clientEmail: string;
  /** The account's public key (PEM, SPKI or certificate). */
  publicKeyPem: string;
}

/** A Google OAuth client of type "Desktop app" (delegated sign-in with a loopback redirect). */
export interface FakeGoogleClient {
  clientId: string;
  clientSecret: string;
}

/** An authorization code Google's consent screen handed to a redirect. */
interface FakeAuthCode {
  clientId: string;
  redirectUri: string;
  challenge: string;
  username: string;
  scopes: string[];
  expiresAt: number;
  redeemed: boolean;
}

/** Options for {@link startFakeIdentityPlatform}. */
export interface FakeIdentityOptions {
  /** Registered apps. Their tenants exist; every other tenant id is "not found". */
  apps?: FakeApp[];
  /** Further tenants that exist without apps. */
  tenants?: string[];
  /** Google service accounts the Google token endpoint accepts. */
  serviceAccounts?: FakeServiceAccount[];
  /** Google desktop-app OAuth clients (authorization code with PKCE). */
  googleClients?: FakeGoogleClient[];
  /** Google hands out a new refresh token with every refresh (it usually does not; some accounts do). */
  googleRotatesRefreshTokens?: boolean;
  /** Lifetime of issued tokens in seconds (default 3600); a few seconds exercises refresh. */
  tokenLifetimeSeconds?: number;
  /** Audience of Microsoft tokens (default https://outlook.office365.com). */
  audience?: string;
  /**
   * Mailbox → client ids allowed to open it: plays Exchange's `Add-MailboxPermission`. A mailbox
   * not listed is open to no app.
   */
  grants?: Record<string, string[]>;
  /** Hold every token response this long (ms), so concurrent callers overlap. */
  tokenDelayMs?: number;
  /** The polling interval the device-code endpoint asks for, in seconds (default 1; Microsoft says 5). */
  deviceCodeIntervalSeconds?: number;
}

/** How to reach the fake platform. */
export interface FakeIdentityInfo {
  /** `https://127.0.0.1:<port>`: give it as the config's `authorityHost`. */
  authorityHost: string;
  host: string;
  port: number;
  /** The CA certificate (PEM file) clients must trust: NODE_EXTRA_CA_CERTS or Dovecot's CA file. */
  caCertPath: string;
  /**
   * The server certificate (PEM) the platform serves. It is the CA certificate itself (one
   * self-signed certificate for 127.0.0.1 and localhost), so another loopback fixture serving it
   * with {@link serverKeyPath} (the fake Graph does) is trusted through the same one CA file.
   */
  serverCertPath: string;
  /** The private key (PEM) of {@link serverCertPath}. Removed with the platform on `stop()`. */
  serverKeyPath: string;
  /** Introspection endpoint for Dovecot's oauth2 passdb (POST token=...). */
  introspectionUrl: string;
  /** Google's token endpoint stand-in (config `tokenUrl`). */
  googleTokenUrl: string;
  /** Google's consent screen stand-in (config `authorizeUrl`). */
  googleAuthorizeUrl: string;
}

/** One request the token endpoint answered. */
export interface FakeTokenRequest {
  /** "microsoft" or "google". */
  provider: "microsoft" | "google";
  tenantId: string;
  clientId: string;
  /** The HTTP status answered. */
  status: number;
  /** The AADSTS number of a refusal, null on success. */
  errorCode: number | null;
  /** Every form field name the client sent (values are not kept: they may be secrets). */
  fields: string[];
  at: Date;
}

/** One validation Dovecot (or the SMTP stand-in) asked for. */
export interface FakeIntrospection {
  service: string;
  user: string;
  active: boolean;
  /** Why a token was refused, when it was. */
  reason: string | null;
}

/** The outcome of {@link FakeIdentityPlatform.validate}. */
export interface TokenValidation {
  ok: boolean;
  reason: string | null;
  claims: Record<string, unknown> | null;
}

interface AzureError {
  status: number;
  error: string;
  code: number;
  text: string;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOMAIN = /^[a-z0-9-]+(\.[a-z0-9-]+)+$/i;
const OIDC_SCOPES = new Set(["openid", "profile", "offline_access"]);

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

function decodeJwt(token: string): { header: Record<string, unknown>; payload: Record<string, unknown>; signed: string; signature: Buffer } | undefined {
  const [h, p, s] = token.split(".");
  if (h === undefined || p === undefined || s === undefined) return undefined;
  try {
    return {
      header: JSON.parse(Buffer.from(h, "base64url").toString("utf8")) as Record<string, unknown>,
      payload: JSON.parse(Buffer.from(p, "base64url").toString("utf8")) as Record<string, unknown>,
      signed: `${h}.${p}`,
      signature: Buffer.from(s, "base64url"),
    };
  } catch {
    return undefined;
  }
}

/** The resources (`https://host`) of a client-credentials request's `/.default` scopes, in order. */
function clientCredentialResources(form: URLSearchParams): string[] {
  return (form.get("scope") ?? "")
    .split(" ")
    .filter((s) => s.endsWith("/.default"))
    .map((s) => s.slice(0, -"/.default".length));
}

/**
 * The resource of delegated scopes: Outlook's when any Outlook scope is asked for (today's
 * behaviour, also when Graph scopes come with it), Graph's when only Graph scopes are, otherwise
 * none.
 */
function delegatedResource(scopes: string[]): string | undefined {
  if (scopes.some((x) => x.startsWith(`${OUTLOOK_AUDIENCE}/`))) return OUTLOOK_AUDIENCE;
  if (scopes.some((x) => x.startsWith(`${GRAPH_AUDIENCE}/`))) return GRAPH_AUDIENCE;
  return undefined;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * A fake Microsoft identity platform (and Google token endpoint) over real HTTPS on loopback, with
 * a CA of its own. It issues RS256 tokens shaped like Exchange Online's (aud, iss, tid, appid, oid,
 * roles), answers refusals the way Azure does (`error`, `error_description: "AADSTSnnnn: ..."`,
 * `error_codes`, `trace_id`, `correlation_id`), and validates its tokens for Dovecot's oauth2
 * passdb (introspection) with a per-mailbox grant list standing in for `Add-MailboxPermission`.
 */
export class FakeIdentityPlatform implements TestServer<FakeIdentityInfo> {
  readonly name = "fake-identity";
  /** Every token request, in order: count them to prove single-flight and caching. */
  readonly tokenRequests: FakeTokenRequest[] = [];
  /** Every access token handed out, so a test can search captured traffic for them. */
  readonly issuedTokens: string[] = [];
  /** Every introspection, in order. */
  readonly introspections: FakeIntrospection[] = [];
  /** Every device code handed out, with its state. */
  readonly deviceCodes: FakeDeviceCode[] = [];
  /** Every refresh token handed out, so a test can search logs, traffic and files for them. */
  readonly issuedRefreshTokens: string[] = [];
  /** Refresh tokens by value: whose, for which client, and whether still good. */
  private readonly refreshTokens = new Map<string, { username: string; clientId: string; tenant: string; scopes: string[]; state: "live" | "rotated" | "revoked" }>();
  private readonly deviceByCode = new Map<string, FakeDeviceCode>();
  private readonly authCodes = new Map<string, FakeAuthCode>();
  /** Who is signed in in "the browser", and what they answer on the consent screen. */
  private browser: { username: string; consent: boolean } | undefined;
  private readonly options: FakeIdentityOptions;
  private readonly apps: FakeApp[];
  private readonly grants = new Map<string, Set<string>>();
  private readonly signingKey: { privateKey: KeyObject; publicKey: KeyObject };
  private readonly kid = randomUUID();
  private failures: Array<{ status: number }> = [];
  private server: Server | undefined;
  private dir: TempDir | undefined;
  private current: FakeIdentityInfo | undefined;
  /** Token lifetime in seconds; may be changed between requests. */
  tokenLifetimeSeconds: number;

  constructor(options: FakeIdentityOptions = {}) {
    this.options = options;
    this.apps = [...(options.apps ?? [])];
    this.tokenLifetimeSeconds = options.tokenLifetimeSeconds ?? 3600;
    for (const [mailbox, clients] of Object.entries(options.grants ?? {})) this.grants.set(mailbox.toLowerCase(), new Set(clients));
    // RSA because Exchange's tokens are RS256; generated per instance so no key is checked in.
    this.signingKey = generateKeyPairSync("rsa", { modulusLength: 2048 });
  }

  get info(): FakeIdentityInfo {
    if (this.current === undefined) throw new Error("fake identity platform is not started");
    return this.current;
  }

  /** Adds or replaces an app registration. */
  setApp(app: FakeApp): void {
    const i = this.apps.findIndex((a) => a.tenantId === app.tenantId && a.clientId === app.clientId);
    if (i >= 0) this.apps[i] = app;
    else this.apps.push(app);
  }

  /** `Add-MailboxPermission`: lets `clientId` open `mailbox`. */
  grant(mailbox: string, clientId: string): void {
    const set = this.grants.get(mailbox.toLowerCase()) ?? new Set<string>();
    set.add(clientId);
    this.grants.set(mailbox.toLowerCase(), set);
  }

  /** `Remove-MailboxPermission`. */
  revoke(mailbox: string, clientId: string): void {
    this.grants.get(mailbox.toLowerCase())?.delete(clientId);
  }

  /** The next `count` token requests fail with this HTTP status (503, 429: transient failures). */
  failNextTokenRequests(count: number, status = 503): void {
    for (let i = 0; i < count; i++) this.failures.push({ status });
  }

  /**
   * The person at the browser: signs in as `username` and approves the device code they were
   * shown. The next poll gets tokens.
   */
  approveDeviceCode(userCode: string, username: string): void {
    const code = this.deviceCodes.find((d) => d.userCode === userCode);
    if (code === undefined) throw new Error(`no device code ${userCode}`);
    code.approvedBy = username;
  }

  /**
   * The account's password changed, or the user revoked the app's consent: every refresh token
   * of `username` stops working (`invalid_grant`, AADSTS50173).
   */
  revokeGrants(username: string): void {
    for (const rt of this.refreshTokens.values()) if (rt.username.toLowerCase() === username.toLowerCase()) rt.state = "revoked";
  }

  /**
   * The person at the browser is signed in as `username` and, on the consent screen, allows (or
   * denies) access: the next authorization request (Google's or Microsoft's) redirects with a
   * code (or `error=access_denied`). Without it, the consent screen signs in as the request's
   * `login_hint`.
   */
  browserSignedInAs(username: string, consent = true): void {
    this.browser = { username, consent };
  }

  /** Refresh-token redemptions, successful or not. */
  refreshRequests(clientId?: string): FakeTokenRequest[] {
    return this.tokenRequests.filter((r) => r.fields.includes("refresh_token") && (clientId === undefined || r.clientId === clientId));
  }

  /** Token requests that reached the endpoint for one client id (successful or not). */
  requestsFor(clientId: string): FakeTokenRequest[] {
    return this.tokenRequests.filter((r) => r.clientId === clientId);
  }

  async start(): Promise<FakeIdentityInfo> {
    if (this.current !== undefined) return this.current;
    const dir = tempDir("fake-idp");
    this.dir = dir;
    const openssl = findBinary("openssl", "POSTROOM_OPENSSL_BIN");
    const caCertPath = join(dir.path, "ca.crt");
    const keyPath = join(dir.path, "server.key");
    // One self-signed certificate, marked as a CA, for 127.0.0.1 and localhost: it is both the trust
    // anchor a client is given and the server's certificate, which keeps the fixture to one openssl call.
    await run(openssl, [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
      "-subj", "/CN=Postroom test identity platform",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-addext", "basicConstraints=critical,CA:TRUE",
      "-keyout", keyPath, "-out", caCertPath,
    ]);
    const [cert, key] = await Promise.all([readFile(caCertPath), readFile(keyPath)]);
    let lastError: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const port = await freePort();
      const server = createServer({ cert, key }, (req, res) => {
        this.handle(req, res).catch((error: unknown) => {
          if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: "server_error", error_description: (error as Error).message }));
        });
      });
      try {
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(port, "127.0.0.1", () => resolve());
        });
      } catch (error) {
        lastError = error;
        continue;
      }
      this.server = server;
      const base = `https://127.0.0.1:${port}`;
      this.current = {
        authorityHost: base,
        host: "127.0.0.1",
        port,
        caCertPath,
        serverCertPath: caCertPath,
        serverKeyPath: keyPath,
        introspectionUrl: `${base}/introspect`,
        googleTokenUrl: `${base}/google/token`,
        googleAuthorizeUrl: `${base}/google/authorize`,
      };
      return this.current;
    }
    await dir.remove();
    throw lastError;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.current = undefined;
    if (server !== undefined) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    const dir = this.dir;
    this.dir = undefined;
    await dir?.remove();
  }

  /**
   * Validates a token as Exchange would for `service` (imap, pop3, smtp) and mailbox `user`:
   * signature, expiry, audience, the protocol's role and a mailbox grant.
   */
  validate(token: string, service: string, user?: string): TokenValidation {
    const jwt = decodeJwt(token);
    if (jwt === undefined) return { ok: false, reason: "not a JWT", claims: null };
    const good = verify("sha256", Buffer.from(jwt.signed), this.signingKey.publicKey, jwt.signature);
    if (!good) return { ok: false, reason: "bad signature", claims: null };
    const c = jwt.payload;
    if (typeof c.exp !== "number" || c.exp * 1000 <= Date.now()) return { ok: false, reason: "expired", claims: c };
    if (c.provider === "google") {
      return user === undefined || c.sub === user ? { ok: true, reason: null, claims: c } : { ok: false, reason: "token is for another user", claims: c };
    }
    if (c.idtyp === "user") {
      // A delegated token: Exchange checks the audience, the protocol's scope and (on login) that
      // the token is the mailbox's own user; the mailbox grant stands in for that check in Dovecot.
      if (c.aud !== OUTLOOK_AUDIENCE) return { ok: false, reason: `wrong audience ${String(c.aud)}`, claims: c };
      const scope = SCOPE_FOR_SERVICE[service];
      const scopes = typeof c.scp === "string" ? c.scp.split(" ") : [];
      if (scope !== undefined && !scopes.includes(scope)) return { ok: false, reason: `missing scope ${scope}`, claims: c };
      if (user !== undefined && String(c.upn).toLowerCase() !== user.toLowerCase()) return { ok: false, reason: "token is for another user", claims: c };
      return { ok: true, reason: null, claims: c };
    }
    if (c.aud !== (this.options.audience ?? EXCHANGE_AUDIENCE)) return { ok: false, reason: `wrong audience ${String(c.aud)}`, claims: c };
    const role = ROLE_FOR_SERVICE[service];
    const roles = Array.isArray(c.roles) ? c.roles : [];
    if (role !== undefined && !roles.includes(role)) return { ok: false, reason: `missing role ${role}`, claims: c };
    if (user !== undefined && !this.grants.get(user.toLowerCase())?.has(String(c.appid))) return { ok: false, reason: "no mailbox permission for this app", claims: c };
    return { ok: true, reason: null, claims: c };
  }

  /**
   * Validates a token as Microsoft Graph would for `permission` on mailbox `user`: signature, expiry,
   * audience `https://graph.microsoft.com`, then the permission itself: an app-only token needs it
   * in `roles`, a delegated one (`idtyp: "user"`) in `scp` and must be `user`'s own (`upn`,
   * compared case-insensitively). Whether an app may open this particular mailbox (RBAC for
   * Applications, an application access policy) is not decided here: the fake Graph keeps those
   * grants, as Exchange does and Entra ID does not.
   */
  validateGraph(token: string, user: string, permission: GraphPermission): TokenValidation {
    const jwt = decodeJwt(token);
    if (jwt === undefined) return { ok: false, reason: "not a JWT", claims: null };
    if (!verify("sha256", Buffer.from(jwt.signed), this.signingKey.publicKey, jwt.signature)) return { ok: false, reason: "bad signature", claims: null };
    const c = jwt.payload;
    if (typeof c.exp !== "number" || c.exp * 1000 <= Date.now()) return { ok: false, reason: "expired", claims: c };
    if (c.aud !== GRAPH_AUDIENCE) return { ok: false, reason: `wrong audience ${String(c.aud)}`, claims: c };
    if (c.idtyp === "user") {
      const scopes = typeof c.scp === "string" ? c.scp.split(" ") : [];
      if (!scopes.includes(permission)) return { ok: false, reason: `missing scope ${permission}`, claims: c };
      if (String(c.upn).toLowerCase() !== user.toLowerCase()) return { ok: false, reason: "token is for another user", claims: c };
      return { ok: true, reason: null, claims: c };
    }
    const roles = Array.isArray(c.roles) ? c.roles : [];
    if (!roles.includes(permission)) return { ok: false, reason: `missing role ${permission}`, claims: c };
    return { ok: true, reason: null, claims: c };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    const parts = url.pathname.split("/").filter(Boolean);
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { "content-type": "application/json; charset=utf-8", date: new Date().toUTCString() });
      res.end(JSON.stringify(value));
    };
    if (parts[0] === "introspect") {
      // Dovecot's oauth2 passdb: /introspect/<service>/<user>?token=... (introspection_mode = get:
      // Dovecot 2.3.19's "post" mode panics in its HTTP client), or a POST body token=..., or a
      // bearer header.
      const form = new URLSearchParams(req.method === "POST" ? await body(req) : "");
      const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "")?.[1];
      const token = url.searchParams.get("token") ?? form.get("token") ?? bearer ?? "";
      const service = decodeURIComponent(parts[1] ?? req.headers["x-dovecot-auth-service"]?.toString() ?? "");
      const user = decodeURIComponent(parts[2] ?? "");
      // Dovecot does not say which mailbox it opens: the grant is its second passdb's job then.
      const result = this.validate(token, service, user === "" ? undefined : user);
      this.introspections.push({ service, user, active: result.ok, reason: result.reason });
      json(200, result.ok ? { ...result.claims, active: true, postroom_user: "oauth", appid: String(result.claims?.appid ?? result.claims?.azp ?? "") } : { active: false, error: result.reason });
      return;
    }
    if (req.method === "POST" && parts[0] === "google" && parts[1] === "token") {
      await this.googleToken(req, json);
      return;
    }
    if (req.method === "GET" && parts[0] === "google" && parts[1] === "authorize") {
      const clientId = url.searchParams.get("client_id") ?? "";
      const known = (this.options.googleClients ?? []).some((c) => c.clientId === clientId);
      this.authorize(url, res, known ? undefined : "Error 401: invalid_client. The OAuth client was not found.");
      return;
    }
    if (req.method === "GET" && parts[1] === "oauth2" && parts[2] === "v2.0" && parts[3] === "authorize") {
      const refused = this.publicClient(url.searchParams.get("client_id") ?? "");
      this.authorize(url, res, refused === undefined ? undefined : `AADSTS${refused.code}: ${refused.text}`);
      return;
    }
    if (req.method === "GET" && parts.at(-2) === ".well-known" && parts.at(-1) === "openid-configuration") {
      json(200, openIdConfiguration(this.info.authorityHost, parts[0] ?? "common"));
      return;
    }
    if (req.method === "GET" && parts.join("/") === "common/discovery/instance") {
      json(200, instanceDiscovery(this.info.authorityHost));
      return;
    }
    if (req.method === "POST" && parts[1] === "oauth2" && parts[2] === "v2.0" && parts[3] === "devicecode") {
      await this.deviceCode(parts[0] ?? "", req, json);
      return;
    }
    if (req.method === "POST" && parts[1] === "oauth2" && parts[2] === "v2.0" && parts[3] === "token") {
      await this.microsoftToken(parts[0] ?? "", req, json);
      return;
    }
    json(404, { error: "not_found", error_description: `no route ${req.method} ${url.pathname}` });
  }

  private async microsoftToken(tenantId: string, req: IncomingMessage, json: (status: number, value: unknown) => void): Promise<void> {
    const form = new URLSearchParams(await body(req));
    const clientId = form.get("client_id") ?? "";
    const record = (status: number, errorCode: number | null) =>
      this.tokenRequests.push({ provider: "microsoft", tenantId, clientId, status, errorCode, fields: [...form.keys()], at: new Date() });
    if (this.options.tokenDelayMs) await new Promise((r) => setTimeout(r, this.options.tokenDelayMs));
    const failure = this.failures.shift();
    if (failure !== undefined) {
      record(failure.status, null);
      json(failure.status, { error: "temporarily_unavailable", error_description: "AADSTS90033: A transient error has occurred. Please try again." , error_codes: [90033] });
      return;
    }
    const grant = form.get("grant_type");
    // msal sends the device-code grant as plain "device_code"; RFC 8628 spells it as a URN. Both are taken.
    if (grant === "urn:ietf:params:oauth:grant-type:device_code" || grant === "device_code" || grant === "refresh_token" || grant === "authorization_code") {
      this.delegatedToken(tenantId, clientId, form, record, json);
      return;
    }
    const refused = this.checkMicrosoft(tenantId, clientId, form);
    if (refused !== undefined) {
      record(refused.status, refused.code);
      const trace = randomUUID();
      const correlation = form.get("client-request-id") ?? randomUUID();
      json(refused.status, {
        error: refused.error,
        error_description: `AADSTS${refused.code}: ${refused.text} Trace ID: ${trace} Correlation ID: ${correlation} Timestamp: ${new Date().toISOString()}`,
        error_codes: [refused.code],
        timestamp: new Date().toISOString(),
        trace_id: trace,
        correlation_id: correlation,
        error_uri: `${this.info.authorityHost}/error?code=${refused.code}`,
      });
      return;
    }
    const app = this.apps.find((a) => a.tenantId === tenantId && a.clientId === clientId)!;
    record(200, null);
    const now = Math.floor(Date.now() / 1000);
    const lifetime = this.tokenLifetimeSeconds;
    // checkMicrosoft let through one resource only, so the first scope names it.
    const graph = clientCredentialResources(form)[0] === GRAPH_AUDIENCE && (this.options.audience ?? EXCHANGE_AUDIENCE) !== GRAPH_AUDIENCE;
    const claims = {
      aud: graph ? GRAPH_AUDIENCE : (this.options.audience ?? EXCHANGE_AUDIENCE),
      iss: `https://sts.windows.net/${tenantId}/`,
      iat: now,
      nbf: now,
      exp: now + lifetime,
      appid: app.clientId,
      appidacr: form.has("client_assertion") ? "2" : "1",
      idtyp: "app",
      oid: app.objectId ?? app.clientId,
      sub: app.objectId ?? app.clientId,
      roles: (graph ? app.graphRoles : app.roles) ?? [],
      tid: tenantId,
      ver: "1.0",
      // Makes every token unique even within one second.
      uti: randomUUID(),
    };
    const accessToken = this.signToken(claims);
    this.issuedTokens.push(accessToken);
    json(200, { token_type: "Bearer", expires_in: lifetime, ext_expires_in: lifetime, access_token: accessToken });
  }

  /** The Azure-shaped error body, as the token endpoint sends it. */
  private azureError(refused: AzureError, form: URLSearchParams): Record<string, unknown> {
    const trace = randomUUID();
    const correlation = form.get("client-request-id") ?? randomUUID();
    return {
      error: refused.error,
      error_description: `AADSTS${refused.code}: ${refused.text} Trace ID: ${trace} Correlation ID: ${correlation} Timestamp: ${new Date().toISOString()}`,
      error_codes: [refused.code],
      timestamp: new Date().toISOString(),
      trace_id: trace,
      correlation_id: correlation,
    };
  }

  /** The public client a delegated request names, or why it is refused. */
  private publicClient(clientId: string): AzureError | undefined {
    const app = this.apps.find((a) => a.clientId === clientId);
    if (app === undefined) return { status: 400, error: "unauthorized_client", code: 700016, text: `Application with identifier '${clientId}' was not found in the directory.` };
    if (app.publicClient !== true) return { status: 401, error: "invalid_client", code: 7000218, text: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'." };
    return undefined;
  }

  /** POST /{tenant}/oauth2/v2.0/devicecode: a user code for a person to enter, and a device code to poll with. */
  private async deviceCode(tenant: string, req: IncomingMessage, json: (status: number, value: unknown) => void): Promise<void> {
    const form = new URLSearchParams(await body(req));
    const clientId = form.get("client_id") ?? "";
    const refused = this.publicClient(clientId);
    this.tokenRequests.push({ provider: "microsoft", tenantId: tenant, clientId, status: refused?.status ?? 200, errorCode: refused?.code ?? null, fields: [...form.keys()], at: new Date() });
    if (refused !== undefined) return json(refused.status, this.azureError(refused, form));
    const deviceCode = randomUUID() + randomUUID();
    // Microsoft's user codes are nine letters and digits; readable ones make test output clearer.
    const userCode = randomUUID().replaceAll("-", "").slice(0, 9).toUpperCase();
    const lifetime = 900;
    const entry: FakeDeviceCode = { userCode, clientId, tenant, scopes: (form.get("scope") ?? "").split(" ").filter(Boolean), expiresAt: Date.now() + lifetime * 1000, pendingPolls: 0 };
    this.deviceCodes.push(entry);
    this.deviceByCode.set(deviceCode, entry);
    const verificationUri = `${this.info.authorityHost}/devicelogin`;
    json(200, {
      user_code: userCode,
      device_code: deviceCode,
      verification_uri: verificationUri,
      expires_in: lifetime,
      interval: this.options.deviceCodeIntervalSeconds ?? 1,
      message: `To sign in, use a web browser to open the page ${verificationUri} and enter the code ${userCode} to authenticate.`,
    });
  }

  /** The device-code poll and the refresh-token redemption of a public client. */
  private delegatedToken(tenant: string, clientId: string, form: URLSearchParams, record: (status: number, errorCode: number | null) => void, json: (status: number, value: unknown) => void): void {
    const refuse = (r: AzureError) => {
      record(r.status, r.code);
      json(r.status, this.azureError(r, form));
    };
    const refused = this.publicClient(clientId);
    if (refused !== undefined) return refuse(refused);
    let username: string;
    let scopes: string[];
    if (form.get("grant_type") === "refresh_token") {
      const value = form.get("refresh_token") ?? "";
      const rt = this.refreshTokens.get(value);
      if (rt === undefined || rt.clientId !== clientId) return refuse({ status: 400, error: "invalid_grant", code: 9002313, text: "Invalid request. Request is malformed or invalid." });
      if (rt.state === "revoked") return refuse({ status: 400, error: "invalid_grant", code: 50173, text: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password." });
      // Strict rotation: a refresh token is good once. Microsoft keeps the old one valid for a
      // while; being stricter here proves the new one is saved before the old one is dropped.
      if (rt.state === "rotated") return refuse({ status: 400, error: "invalid_grant", code: 70000, text: "The provided grant is invalid or malformed: the refresh token was already used." });
      rt.state = "rotated";
      username = rt.username;
      scopes = rt.scopes;
      tenant = rt.tenant;
      // A Microsoft refresh token is good for any resource the user consented to: asking with
      // Graph scopes after an Outlook sign-in (or the other way round) gets a token for that
      // resource. The same resource keeps today's rule (the scopes of the sign-in).
      const asked = (form.get("scope") ?? "").split(" ").filter(Boolean);
      if (asked.length > 0 && delegatedResource(asked) !== undefined && delegatedResource(asked) !== delegatedResource(scopes)) scopes = asked;
    } else if (form.get("grant_type") === "authorization_code") {
      const code = this.redeemAuthCode(form, clientId);
      if (code === "verifier") return refuse({ status: 400, error: "invalid_grant", code: 501481, text: "The Code_Verifier does not match the code_challenge supplied in the authorization request." });
      if (code === "redirect") return refuse({ status: 400, error: "invalid_grant", code: 50011, text: "The redirect URI specified in the request does not match the redirect URI of the authorization request." });
      if (code === "code") return refuse({ status: 400, error: "invalid_grant", code: 54005, text: "OAuth2 Authorization code was already redeemed, or is invalid." });
      username = code.username;
      scopes = code.scopes;
    } else {
      const code = this.deviceByCode.get(form.get("device_code") ?? "");
      if (code === undefined || code.clientId !== clientId) return refuse({ status: 400, error: "invalid_grant", code: 70000, text: "The provided grant is invalid or malformed." });
      if (code.expiresAt <= Date.now()) return refuse({ status: 400, error: "expired_token", code: 70020, text: "The provided authorization code or refresh token has expired due to inactivity." });
      if (code.redeemed === true) return refuse({ status: 400, error: "invalid_grant", code: 54005, text: "OAuth2 Authorization code was already redeemed." });
      if (code.approvedBy === undefined) {
        code.pendingPolls++;
        return refuse({ status: 400, error: "authorization_pending", code: 70016, text: "OAuth 2.0 device flow error. Authorization is pending. Continue polling." });
      }
      code.redeemed = true;
      username = code.approvedBy;
      scopes = code.scopes;
    }
    record(200, null);
    const tid = tenant === "consumers" ? CONSUMER_TENANT_ID : GUID.test(tenant) ? tenant : "4d3c2b1a-0f9e-4d8c-b7a6-958473625140";
    const oid = createHash("sha256").update(username.toLowerCase()).digest("hex").slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
    const now = Math.floor(Date.now() / 1000);
    const lifetime = this.tokenLifetimeSeconds;
    // Outlook scopes give today's Exchange token; Graph scopes alone give a Graph token.
    const audience = delegatedResource(scopes) === GRAPH_AUDIENCE ? GRAPH_AUDIENCE : OUTLOOK_AUDIENCE;
    const granted = scopes.filter((x) => x.startsWith(`${audience}/`)).map((x) => x.slice(audience.length + 1));
    const accessToken = this.signToken({
      aud: audience,
      iss: `https://sts.windows.net/${tid}/`,
      iat: now,
      nbf: now,
      exp: now + lifetime,
      appid: clientId,
      idtyp: "user",
      oid,
      sub: oid,
      upn: username,
      unique_name: username,
      scp: granted.join(" "),
      tid,
      ver: "1.0",
      uti: randomUUID(),
    });
    const idToken = this.signToken({ aud: clientId, iss: `${this.info.authorityHost}/${tid}/v2.0`, iat: now, nbf: now, exp: now + 3600, oid, sub: oid, tid, preferred_username: username, name: username, ver: "2.0" });
    const refreshToken = `0.fake-rt.${randomUUID()}.${randomUUID()}`;
    this.refreshTokens.set(refreshToken, { username, clientId, tenant, scopes, state: "live" });
    this.issuedRefreshTokens.push(refreshToken);
    this.issuedTokens.push(accessToken);
    json(200, {
      token_type: "Bearer",
      scope: [...granted.map((x) => `${audience}/${x}`), "openid", "profile", "offline_access"].join(" "),
      expires_in: lifetime,
      ext_expires_in: lifetime,
      access_token: accessToken,
      refresh_token: refreshToken,
      id_token: idToken,
      client_info: b64url(JSON.stringify({ uid: oid, utid: tid })),
    });
  }

  private checkMicrosoft(tenantId: string, clientId: string, form: URLSearchParams): AzureError | undefined {
    const t = tenantId.toLowerCase();
    if (t === "common" || t === "organizations" || t === "consumers") {
      return { status: 400, error: "invalid_request", code: 9001023, text: "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint." };
    }
    if (!GUID.test(tenantId) && !DOMAIN.test(tenantId)) {
      return { status: 400, error: "invalid_request", code: 900023, text: `Specified tenant identifier '${tenantId}' is neither a valid DNS name, nor a valid external domain.` };
    }
    const tenants = new Set([...(this.options.tenants ?? []), ...this.apps.map((a) => a.tenantId)]);
    if (!tenants.has(tenantId)) {
      return { status: 400, error: "invalid_request", code: 90002, text: `Tenant '${tenantId}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.` };
    }
    if (form.get("grant_type") !== "client_credentials") {
      return { status: 400, error: "unsupported_grant_type", code: 70003, text: "The app requested an unsupported grant type." };
    }
    const app = this.apps.find((a) => a.tenantId === tenantId && a.clientId === clientId);
    if (app === undefined) {
      return { status: 400, error: "unauthorized_client", code: 700016, text: `Application with identifier '${clientId}' was not found in the directory '${tenantId}'.` };
    }
    if (app.disabled === true) return { status: 400, error: "unauthorized_client", code: 7000112, text: `Application '${clientId}' is disabled.` };
    const scopes = (form.get("scope") ?? "").split(" ").filter((s) => s !== "" && !OIDC_SCOPES.has(s));
    // Exchange's resource (or the configured audience), and Graph for apps given Graph permissions.
    const resources = new Set([this.options.audience ?? EXCHANGE_AUDIENCE, ...(app.graphRoles === undefined ? [] : [GRAPH_AUDIENCE])]);
    for (const scope of scopes) {
      if (!scope.endsWith("/.default")) {
        return { status: 400, error: "invalid_scope", code: 1002012, text: `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).` };
      }
      if (!resources.has(scope.slice(0, -"/.default".length))) {
        return { status: 400, error: "invalid_resource", code: 500011, text: `The resource principal named ${scope.slice(0, -"/.default".length)} was not found in the tenant named ${tenantId}.` };
      }
    }
    if (scopes.length === 0) return { status: 400, error: "invalid_scope", code: 1002012, text: "The provided value for scope is not valid." };
    // A token has one audience: Azure refuses a request naming two resources.
    if (new Set(clientCredentialResources(form)).size > 1) {
      return { status: 400, error: "invalid_scope", code: 70011, text: "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: scopes of more than one resource were requested." };
    }
    const secret = form.get("client_secret");
    const assertion = form.get("client_assertion");
    if (secret !== null) {
      const match = (app.secrets ?? []).find((s) => s.value === secret);
      if (match === undefined) return { status: 401, error: "invalid_client", code: 7000215, text: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app." };
      if (match.expired === true) return { status: 401, error: "invalid_client", code: 7000222, text: `The provided client secret keys for app '${clientId}' are expired.` };
      return undefined;
    }
    if (assertion !== null) {
      return this.checkAssertion(app, assertion) ? undefined : { status: 401, error: "invalid_client", code: 700027, text: "Client assertion contains an invalid signature. [Reason - The key was not found.]" };
    }
    return { status: 401, error: "invalid_client", code: 7000218, text: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'." };
  }

  /** A client assertion is good when signed by a certificate uploaded to the app (found by thumbprint). */
  private checkAssertion(app: FakeApp, assertion: string): boolean {
    const jwt = decodeJwt(assertion);
    if (jwt === undefined) return false;
    const thumb256 = typeof jwt.header["x5t#S256"] === "string" ? Buffer.from(jwt.header["x5t#S256"], "base64url").toString("hex") : undefined;
    const thumb1 = typeof jwt.header.x5t === "string" ? Buffer.from(jwt.header.x5t, "base64url").toString("hex") : undefined;
    for (const pem of app.certificates ?? []) {
      const x509 = new X509Certificate(pem);
      const raw = x509.raw;
      const sha256 = createHash("sha256").update(raw).digest("hex");
      const sha1 = createHash("sha1").update(raw).digest("hex");
      if (thumb256 !== sha256 && thumb1 !== sha1) continue;
      const key = x509.publicKey;
      const ok =
        jwt.header.alg === "PS256"
          ? verify("sha256", Buffer.from(jwt.signed), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, jwt.signature)
          : verify("sha256", Buffer.from(jwt.signed), key, jwt.signature);
      if (ok) return true;
    }
    return false;
  }

  /**
   * A consent screen (Google's or Microsoft's), reduced to its answer: checks the request as both
   * do for an installed app (a known client, a loopback redirect, a code, PKCE with S256) and
   * redirects with a one-use code.
   */
  private authorize(url: URL, res: ServerResponse, clientRefused: string | undefined): void {
    const q = url.searchParams;
    const page = (status: number, text: string) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
      res.end(text);
    };
    const clientId = q.get("client_id") ?? "";
    if (clientRefused !== undefined) return page(401, clientRefused);
    const redirectUri = q.get("redirect_uri") ?? "";
    if (!/^http:\/\/(127\.0\.0\.1|\[::1\]|localhost)(:\d+)?\//.test(redirectUri)) return page(400, "Error 400: redirect_uri_mismatch");
    if (q.get("response_type") !== "code") return page(400, "Error 400: unsupported_response_type");
    const challenge = q.get("code_challenge");
    if (challenge === null || q.get("code_challenge_method") !== "S256") return page(400, "Error 400: invalid_request. Missing code_challenge (S256).");
    const back = new URL(redirectUri);
    const state = q.get("state");
    if (state !== null) back.searchParams.set("state", state);
    const browser = this.browser ?? { username: q.get("login_hint") ?? "", consent: true };
    if (!browser.consent || browser.username === "") {
      back.searchParams.set("error", "access_denied");
    } else {
      const code = `4/fake-${randomUUID()}`;
      this.authCodes.set(code, { clientId, redirectUri, challenge, username: browser.username, scopes: (q.get("scope") ?? "").split(" ").filter(Boolean), expiresAt: Date.now() + 600_000, redeemed: false });
      back.searchParams.set("code", code);
      back.searchParams.set("scope", q.get("scope") ?? "");
    }
    res.writeHead(302, { location: back.toString() });
    res.end();
  }

  /** An authorization code redeemed once, by its client, with its redirect and its PKCE verifier; or why not. */
  private redeemAuthCode(form: URLSearchParams, clientId: string): FakeAuthCode | "code" | "redirect" | "verifier" {
    const code = this.authCodes.get(form.get("code") ?? "");
    if (code === undefined || code.clientId !== clientId || code.redeemed || code.expiresAt <= Date.now()) return "code";
    if (code.redirectUri !== form.get("redirect_uri")) return "redirect";
    if (createHash("sha256").update(form.get("code_verifier") ?? "").digest("base64url") !== code.challenge) return "verifier";
    code.redeemed = true;
    return code;
  }

  /** Google's authorization-code and refresh-token grants of a desktop client. */
  private googleDelegatedToken(form: URLSearchParams, record: (status: number) => void, json: (status: number, value: unknown) => void): void {
    const refuse = (status: number, error: string, description: string) => {
      record(status);
      json(status, { error, error_description: description });
    };
    const clientId = form.get("client_id") ?? "";
    const client = (this.options.googleClients ?? []).find((c) => c.clientId === clientId);
    if (client === undefined || client.clientSecret !== form.get("client_secret")) return refuse(401, "invalid_client", "Unauthorized");
    let username: string;
    let scopes: string[];
    if (form.get("grant_type") === "authorization_code") {
      const code = this.redeemAuthCode(form, clientId);
      if (typeof code === "string") return refuse(400, code === "redirect" ? "redirect_uri_mismatch" : "invalid_grant", code === "redirect" ? "Bad Request" : "Malformed auth code.");
      username = code.username;
      scopes = code.scopes;
    } else {
      const rt = this.refreshTokens.get(form.get("refresh_token") ?? "");
      if (rt === undefined || rt.clientId !== clientId || rt.state !== "live") return refuse(400, "invalid_grant", "Token has been expired or revoked.");
      username = rt.username;
      scopes = rt.scopes;
      if (this.options.googleRotatesRefreshTokens) rt.state = "rotated";
    }
    record(200);
    const now = Math.floor(Date.now() / 1000);
    const lifetime = this.tokenLifetimeSeconds;
    const scope = scopes.filter((x) => x !== "openid" && x !== "email").join(" ");
    const accessToken = this.signToken({ provider: "google", sub: username, azp: clientId, scope, iat: now, exp: now + lifetime, uti: randomUUID() });
    this.issuedTokens.push(accessToken);
    const newRefresh = form.get("grant_type") === "authorization_code" || this.options.googleRotatesRefreshTokens === true;
    let refreshToken: string | undefined;
    if (newRefresh) {
      refreshToken = `1//fake-${randomUUID()}`;
      this.refreshTokens.set(refreshToken, { username, clientId, tenant: "google", scopes, state: "live" });
      this.issuedRefreshTokens.push(refreshToken);
    }
    const idToken = scopes.includes("email")
      ? this.signToken({ iss: "https://accounts.google.com", aud: clientId, azp: clientId, sub: createHash("sha256").update(username).digest("hex").slice(0, 21), email: username, email_verified: true, iat: now, exp: now + 3600 })
      : undefined;
    json(200, { token_type: "Bearer", expires_in: lifetime, access_token: accessToken, scope, ...(refreshToken ? { refresh_token: refreshToken } : {}), ...(idToken ? { id_token: idToken } : {}) });
  }

  private async googleToken(req: IncomingMessage, json: (status: number, value: unknown) => void): Promise<void> {
    const form = new URLSearchParams(await body(req));
    const grant = form.get("grant_type");
    if (grant === "authorization_code" || grant === "refresh_token") {
      this.googleDelegatedToken(
        form,
        (status) => this.tokenRequests.push({ provider: "google", tenantId: "google", clientId: form.get("client_id") ?? "", status, errorCode: null, fields: [...form.keys()], at: new Date() }),
        json,
      );
      return;
    }
    const jwt = decodeJwt(form.get("assertion") ?? "");
    const iss = typeof jwt?.payload.iss === "string" ? jwt.payload.iss : "";
    const record = (status: number) =>
      this.tokenRequests.push({ provider: "google", tenantId: "google", clientId: iss, status, errorCode: null, fields: [...form.keys()], at: new Date() });
    const account = (this.options.serviceAccounts ?? []).find((a) => a.clientEmail === iss);
    const refuse = (status: number, error: string, description: string) => {
      record(status);
      json(status, { error, error_description: description });
    };
    if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer") return refuse(400, "unsupported_grant_type", "Invalid grant_type");
    if (jwt === undefined || account === undefined) return refuse(401, "invalid_client", "The OAuth client was not found.");
    const key = createPublicKey(account.publicKeyPem.includes("CERTIFICATE") ? new X509Certificate(account.publicKeyPem).publicKey.export({ type: "spki", format: "pem" }) : account.publicKeyPem);
    if (jwt.header.alg !== "RS256" || !verify("sha256", Buffer.from(jwt.signed), key, jwt.signature)) return refuse(400, "invalid_grant", "Invalid JWT Signature.");
    const c = jwt.payload;
    if (c.aud !== this.info.googleTokenUrl) return refuse(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe");
    if (c.scope !== "https://mail.google.com/") return refuse(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
    if (typeof c.sub !== "string" || !c.sub.includes("@")) return refuse(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method.");
    record(200);
    const now = Math.floor(Date.now() / 1000);
    const lifetime = this.tokenLifetimeSeconds;
    const accessToken = this.signToken({ provider: "google", sub: c.sub, azp: iss, scope: c.scope, iat: now, exp: now + lifetime, uti: randomUUID() });
    this.issuedTokens.push(accessToken);
    json(200, { token_type: "Bearer", expires_in: lifetime, access_token: accessToken });
  }

  private signToken(claims: Record<string, unknown>): string {
    const signed = `${b64url(JSON.stringify({ typ: "JWT", alg: "RS256", kid: this.kid }))}.${b64url(JSON.stringify(claims))}`;
    return `${signed}.${b64url(sign("sha256", Buffer.from(signed), this.signingKey.privateKey))}`;
  }
}

/** The OpenID configuration document of one tenant, as the real platform shapes it. */
export function openIdConfiguration(authorityHost: string, tenantId: string): Record<string, unknown> {
  const base = `${authorityHost}/${tenantId}`;
  return {
    token_endpoint: `${base}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    jwks_uri: `${authorityHost}/${tenantId}/discovery/v2.0/keys`,
    response_modes_supported: ["query", "fragment", "form_post"],
    subject_types_supported: ["pairwise"],
    id_token_signing_alg_values_supported: ["RS256"],
    response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
    scopes_supported: ["openid", "profile", "email", "offline_access"],
    issuer: `${base}/v2.0`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: `${authorityHost}/oidc/userinfo`,
    authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
    device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${base}/oauth2/v2.0/logout`,
    claims_supported: ["sub", "iss", "aud", "exp", "iat", "tid"],
    kerberos_endpoint: `${base}/kerberos`,
    tenant_region_scope: "EU",
    cloud_instance_name: new URL(authorityHost).host,
    cloud_graph_host_name: "graph.windows.net",
    msgraph_host: "graph.microsoft.com",
    rbac_url: "https://pas.windows.net",
  };
}

/** The instance-discovery answer naming only the fake host. */
export function instanceDiscovery(authorityHost: string): Record<string, unknown> {
  const host = new URL(authorityHost).host;
  return {
    tenant_discovery_endpoint: `${authorityHost}/common/v2.0/.well-known/openid-configuration`,
    "api-version": "1.1",
    metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
  };
}

/** Starts a fake identity platform on a free loopback port; `stop()` it when done. */
export async function startFakeIdentityPlatform(options: FakeIdentityOptions = {}): Promise<FakeIdentityPlatform> {
  const idp = new FakeIdentityPlatform(options);
  await idp.start();
  return idp;
}

/** An RSA certificate and key (PEM) for client-assertion or service-account tests. */
export interface RsaCertificate {
  certificatePem: string;
  privateKeyPem: string;
  certPath: string;
  keyPath: string;
}

/** Makes an RSA-2048 self-signed certificate (msal signs client assertions with RSA). */
export async function rsaCertificate(dir: string, name = "app"): Promise<RsaCertificate> {
  const openssl = findBinary("openssl", "POSTROOM_OPENSSL_BIN");
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  await run(openssl, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", `/CN=${name}`, "-keyout", keyPath, "-out", certPath]);
  const [certificatePem, privateKeyPem] = await Promise.all([readFile(certPath, "utf8"), readFile(keyPath, "utf8")]);
  return { certificatePem, privateKeyPem, certPath, keyPath };
}
