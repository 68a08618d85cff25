import type { MailboxAuth, PostroomConfig } from "@postroom/config";
import { allMailboxes, findMailbox, GRAPH_ENDPOINTS, resolveSecret, SecretError } from "@postroom/config";
import { CredentialRequest, mailboxOfSubject, SignInCode, SignInRequest, type Credential, type CredentialPurpose, type CredentialError, type MailboxAuthStatus, type Names, type SignInReply } from "@postroom/contracts";
import { sealReply, type NatsConnection } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { randomUUID } from "node:crypto";
import type { Msg, Subscription } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { CredentialConfigError, classifyTokenFailure, type TokenFailure } from "./classify.js";
import { MicrosoftDelegatedSource } from "./delegated.js";
import { GoogleDelegatedSource } from "./google-delegated.js";
import { expiryWarnings, type ExpiryWarning } from "./expiry.js";
import type { GrantStore } from "./grant-store.js";
import {
  GoogleTokenSource,
  MicrosoftTokenSource,
  parseServiceAccountKey,
  secretFingerprint,
  type AccessToken,
  type MicrosoftCloudName,
  type TokenSource,
} from "./providers.js";
import { TokenCache, TokenUnavailableError } from "./token-cache.js";

/** What the service reports for metrics (a seam: the telemetry work plugs counters in here). */
export interface CredentialServiceEvents {
  /** A request was answered (bounded labels: tenant and mailbox ids, never an address). */
  onAnswered?(event: { tenant: string; mailbox: string; outcome: "ok" | "transient" | "needs-admin" | "unknown-mailbox"; ms: number }): void;
  /** A token request to an identity platform finished. */
  onTokenFetched?(event: { provider: "microsoft365" | "google-service-account"; ok: boolean; code: string | null; ms: number }): void;
}

export interface CredentialServiceOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  /** Serve only these tenants (per-tenant deployments); all when absent. */
  tenants?: string[];
  /** The mailbox-status KV bucket, for each mailbox's auth state (`<t>.<m>.auth`). Not published when absent. */
  statusKv?: KV;
  /** Warn this many days ahead of a secret's or certificate's expiry (default 30). */
  expiryWarnDays?: number;
  /** How often to re-check expiry dates (default 6 h). */
  expiryCheckMs?: number;
  /** After a needs-admin failure, ask the identity platform again no sooner than this (default 60 s). */
  needsAdminRetryMs?: number;
  /** Metrics seam. */
  events?: CredentialServiceEvents;
  /** The sealed store of delegated grants (config `tokenStore`); delegated mailboxes need it. */
  grants?: GrantStore;
  /** The config file as operators name it, for the re-sign-in command (default: POSTROOM_CONFIG). */
  configPath?: string;
}

type Reply = Credential | CredentialError;
type OAuthAuth = Exclude<MailboxAuth, { type: "password" | "microsoft-delegated" | "google-delegated" }>;
type DelegatedAuth = Extract<MailboxAuth, { type: "microsoft-delegated" }>;
type GoogleAuth = Extract<MailboxAuth, { type: "google-delegated" }>;

/** Either delegated source's browser sign-in. */
interface BrowserSignIn {
  startBrowserSignIn(id: string, redirectUri: string): Promise<{ authorizationUrl: string; expiresAt: Date }>;
  completeBrowserSignIn(id: string, state: string, code: string): Promise<string>;
}

/** The mailbox's delegated auth (inbound first, then SMTP's), if it has one. */
function delegatedAuthOf(mailbox: { auth: MailboxAuth; smtp?: { auth?: MailboxAuth | undefined } | undefined }): DelegatedAuth | GoogleAuth | undefined {
  for (const auth of [mailbox.auth, mailbox.smtp?.auth]) if (auth?.type === "microsoft-delegated" || auth?.type === "google-delegated") return auth;
  return undefined;
}

/** A token source that resolves its secret references on every fetch, so a rotated secret is used without a restart. */
class ResolvingSource implements TokenSource {
  #inner: { fingerprint: string; source: TokenSource } | undefined;

  constructor(
    private readonly build: () => Promise<{ fingerprint: string; create: () => TokenSource }>,
    private readonly provider: "microsoft365" | "google-service-account",
    private readonly events: CredentialServiceEvents | undefined,
  ) {}

  async acquire(): Promise<AccessToken> {
    const started = Date.now();
    try {
      const { fingerprint, create } = await this.build();
      if (this.#inner?.fingerprint !== fingerprint) this.#inner = { fingerprint, source: create() };
      const token = await this.#inner.source.acquire();
      this.events?.onTokenFetched?.({ provider: this.provider, ok: true, code: null, ms: Date.now() - started });
      return token;
    } catch (error) {
      const failure = classifyTokenFailure(error);
      // msal-node remembers a 5xx/429 answer and refuses every request for 60 s by itself
      // (its throttling cache, per instance). The token cache already backs off (1 s doubling to
      // 60 s, with jitter): a fresh instance lets that backoff, not msal's fixed minute, decide.
      if (failure.kind === "transient") this.#inner = undefined;
      this.events?.onTokenFetched?.({ provider: this.provider, ok: false, code: failure.code, ms: Date.now() - started });
      throw error;
    }
  }
}

/**
 * Answers credential requests. This is the only process that resolves secret references, so the
 * rest of the system holds references, never values. Replies go only to the requester's inbox;
 * nothing here logs a credential (the logger redacts `password` and `accessToken` as well), and the
 * auth state it publishes holds codes and fixes, never a secret or a token.
 *
 * OAuth tokens are cached per credential (one Microsoft app serves every mailbox it is granted,
 * so its token is shared; a Google token is per mailbox because `sub` is the mailbox), refreshed
 * ahead of expiry, fetched once however many requests arrive together, and fetched afresh when a
 * caller says the server rejected the last one.
 */
export class CredentialService {
  #subs: Subscription[] = [];
  #served = 0;
  #handling = new Set<Promise<void>>();
  #caches = new Map<string, TokenCache>();
  #published = new Map<string, string>();
  #signatures = new Map<string, string>();
  #warnings = new Map<string, ExpiryWarning[]>();
  #expiryTimer: NodeJS.Timeout | undefined;
  #delegated = new Map<string, MicrosoftDelegatedSource>();
  #google = new Map<string, GoogleDelegatedSource>();
  #signIns = new Map<string, NonNullable<MailboxAuthStatus["signIn"]>>();

  constructor(private readonly options: CredentialServiceOptions) {}

  get served(): number {
    return this.#served;
  }

  async start(): Promise<void> {
    const { nc, names, tenants } = this.options;
    const subjects = tenants?.length
      ? tenants.map((t) => names.subjects.wildcard.credentialRequest(t))
      : [names.subjects.wildcard.credentialRequest()];
    for (const subject of subjects) {
      // A queue group lets several token-service replicas share the load.
      const sub = nc.subscribe(subject, { queue: "token-service" });
      this.#subs.push(sub);
      void (async () => {
        for await (const msg of sub) {
          // Concurrently: a request waiting for the identity platform must not hold up the
          // requests behind it that the cache can answer at once.
          const p = this.#handle(msg).finally(() => this.#handling.delete(p));
          this.#handling.add(p);
        }
      })();
    }
    const signInSubjects = tenants?.length ? tenants.map((t) => names.subjects.wildcard.signIn(t)) : [names.subjects.wildcard.signIn()];
    for (const subject of signInSubjects) {
      const sub = nc.subscribe(subject, { queue: "token-service" });
      this.#subs.push(sub);
      void (async () => {
        for await (const msg of sub) {
          const p = this.#handleSignIn(msg).finally(() => this.#handling.delete(p));
          this.#handling.add(p);
        }
      })();
    }
    await nc.flush();
    await this.checkExpiry();
    this.#expiryTimer = setInterval(() => void this.checkExpiry(), this.options.expiryCheckMs ?? 6 * 3_600_000);
    this.#expiryTimer.unref();
  }

  async #handle(msg: Msg): Promise<void> {
    const started = Date.now();
    // The subject is the requester's claim: it must be exactly a credential subject of a mailbox
    // this replica serves, or nothing of the configuration is consulted for it.
    const at = mailboxOfSubject(this.options.names.subjects.credentialRequest, msg.subject);
    const served = at !== undefined && this.#serves(at.tenant, at.mailbox);
    const reply = await (served ? this.#answer(at.tenant, at.mailbox, msg.data) : Promise.resolve(unknownMailbox(msg.subject))).catch((error: unknown) => {
      // A bug here must not leave the requester waiting for its timeout, nor crash the process.
      this.options.logger.error({ problem: (error as Error).message }, "credential request failed unexpectedly");
      return failure("transient", "token-service failed to answer this request", "internal", null);
    });
    this.#served++;
    // A secret travels only sealed to the requester's key (#answer refuses a request without one).
    const key = replyKeyOf(msg.data);
    msg.respond(JSON.stringify(key && !("error" in reply) ? sealReply(reply, key) : reply));
    this.options.events?.onAnswered?.({
      // A made-up mailbox is never a label value (it would be a new series per request).
      tenant: served ? at.tenant : "unknown",
      mailbox: served ? at.mailbox : "unknown",
      outcome: "error" in reply ? reply.error.kind : "ok",
      ms: Date.now() - started,
    });
  }

  /** True when the mailbox is configured and its tenant is one this replica serves. */
  #serves(tenantId: string, mailboxId: string): boolean {
    const tenants = this.options.tenants;
    if (tenants?.length && !tenants.includes(tenantId)) return false;
    return findMailbox(this.options.config, tenantId, mailboxId) !== undefined;
  }

  async #answer(tenantId: string, mailboxId: string, data: Uint8Array): Promise<Reply> {
    const log = this.options.logger.child({ tenant: tenantId, mailbox: mailboxId });
    let request: CredentialRequest;
    try {
      request = CredentialRequest.parse(JSON.parse(new TextDecoder().decode(data)));
    } catch {
      return failure("transient", "the credential request is not a v1 request", null, "upgrade the requesting service");
    }
    if (!request.replyKey) {
      return failure("transient", "the request carries no replyKey, so its answer could be read by others: no credential is sent in clear", null, "upgrade the requesting service (its CredentialClient seals replies)");
    }
    if ((request.tenant !== undefined && request.tenant !== tenantId) || (request.mailbox !== undefined && request.mailbox !== mailboxId)) {
      log.warn({ named: `${request.tenant ?? tenantId}/${request.mailbox ?? mailboxId}` }, "credential request refused: body and subject name different mailboxes");
      return failure("unknown-mailbox", `the request names mailbox ${request.tenant ?? tenantId}/${request.mailbox ?? mailboxId} but was sent for ${tenantId}/${mailboxId}`, null, "ask on the subject of the mailbox you mean");
    }
    const ref = findMailbox(this.options.config, tenantId, mailboxId);
    if (!ref) return failure("unknown-mailbox", `no mailbox ${tenantId}/${mailboxId} in the configuration`, null, "add it to the config file");
    const { mailbox } = ref;
    const auth = request.purpose === "smtp" ? (mailbox.smtp?.auth ?? mailbox.auth) : mailbox.auth;
    if (auth.type === "password") {
      try {
        const password = await resolveSecret(auth.password, this.options.env ?? process.env);
        log.debug({ purpose: request.purpose }, "password credential served");
        this.#publish(tenantId, mailboxId, "password", { state: "ok", code: null, message: null, fix: null }, null);
        return { version: "v1", mechanism: "PLAIN", username: auth.username ?? mailbox.address, password };
      } catch (error) {
        const message = error instanceof SecretError ? error.message : "the password reference could not be resolved";
        const fix = "set the environment variable or file named in the config";
        log.warn({ purpose: request.purpose, problem: message }, "credential unavailable");
        this.#publish(tenantId, mailboxId, "password", { state: "needs-admin", code: "secret-unresolved", message, fix }, null);
        return failure("needs-admin", message, "secret-unresolved", fix);
      }
    }
    const cache =
      auth.type === "microsoft-delegated" || auth.type === "google-delegated"
        ? this.#delegatedCache(tenantId, mailbox.id, auth, mailbox.address, mailbox.aliases)
        : this.#cacheFor(auth, mailbox.address, request.purpose);
    try {
      const token = await cache.get(request.rejected);
      if (request.rejected) log.info({ purpose: request.purpose }, "the server rejected a token; a fresh one was served");
      this.#publish(tenantId, mailboxId, auth.type, { state: "ok", code: null, message: null, fix: null }, token.expiresAt);
      return { version: "v1", mechanism: "XOAUTH2", username: mailbox.address, accessToken: token.token, expiresAt: token.expiresAt.toISOString() };
    } catch (error) {
      const f: TokenFailure = error instanceof TokenUnavailableError ? error.failure : classifyTokenFailure(error);
      const retryAt = error instanceof TokenUnavailableError ? error.retryAt.toISOString() : null;
      if (this.#publish(tenantId, mailboxId, auth.type, { state: f.kind, code: f.code, message: f.message, fix: f.fix }, null)) {
        // Logged on a change of state only: a mailbox retried every minute does not flood the log.
        log[f.kind === "needs-admin" ? "error" : "warn"]({ purpose: request.purpose, code: f.code, problem: f.message, fix: f.fix, retryAt }, f.kind === "needs-admin" ? "mailbox authentication needs an administrator" : "token request failed; backing off");
      }
      return failure(f.kind, f.message, f.code, f.fix);
    }
  }

  /** The re-sign-in command named in every needs-admin answer of a delegated mailbox. */
  #signInCommand(tenantId: string, mailboxId: string): string {
    const path = this.options.configPath ?? (this.options.env ?? process.env).POSTROOM_CONFIG ?? "<config file>";
    return `postroom auth sign-in --config ${path} --mailbox ${tenantId}/${mailboxId}`;
  }

  /** The sealed grant store, which every delegated mailbox needs. */
  #grants(): GrantStore {
    const grants = this.options.grants;
    if (!grants) throw new CredentialConfigError("no tokenStore is configured, so delegated grants cannot be kept", "add tokenStore: { key: env:POSTROOM_TOKEN_KEY } to the config", "token-store-missing");
    return grants;
  }

  /** One Google delegated mailbox's token source (OAuth2Client over the sealed grant). */
  #googleSource(tenantId: string, mailboxId: string, auth: GoogleAuth, address: string, aliases: string[]): GoogleDelegatedSource {
    const key = `${tenantId}.${mailboxId}`;
    let source = this.#google.get(key);
    if (!source) {
      const env = this.options.env ?? process.env;
      source = new GoogleDelegatedSource(
        {
          key: this.options.names.mailboxKey(tenantId, mailboxId),
          address,
          aliases,
          clientId: auth.clientId,
          clientSecret: () => resolveConfigSecret(auth.clientSecret, env, "clientSecret"),
          scopes: auth.scopes,
          ...(auth.authorizeUrl === undefined ? {} : { authorizeUrl: auth.authorizeUrl }),
          ...(auth.tokenUrl === undefined ? {} : { tokenUrl: auth.tokenUrl }),
          signInCommand: this.#signInCommand(tenantId, mailboxId),
        },
        this.#grants(),
      );
      this.#google.set(key, source);
    }
    return source;
  }

  /** One delegated mailbox's token source (msal public client over the sealed grant). */
  #delegatedSource(tenantId: string, mailboxId: string, auth: DelegatedAuth, address: string, aliases: string[]): MicrosoftDelegatedSource {
    const key = `${tenantId}.${mailboxId}`;
    let source = this.#delegated.get(key);
    if (!source) {
      const grants = this.#grants();
      source = new MicrosoftDelegatedSource(
        {
          key: this.options.names.mailboxKey(tenantId, mailboxId),
          address,
          aliases,
          clientId: auth.clientId,
          authorityTenant: auth.tenant ?? "organizations",
          scopes: auth.scopes ?? [],
          cloud: auth.cloud as MicrosoftCloudName,
          ...(auth.authorityHost === undefined ? {} : { authorityHost: auth.authorityHost }),
          signInCommand: this.#signInCommand(tenantId, mailboxId),
        },
        grants,
      );
      this.#delegated.set(key, source);
    }
    return source;
  }

  /** A delegated mailbox's token cache: one per mailbox (the token is the person's own). */
  #delegatedCache(tenantId: string, mailboxId: string, auth: DelegatedAuth | GoogleAuth, address: string, aliases: string[]): TokenCache {
    const key = ["msd", tenantId, mailboxId].join("|");
    let cache = this.#caches.get(key);
    if (!cache) {
      let source: TokenSource;
      try {
        source = auth.type === "google-delegated" ? this.#googleSource(tenantId, mailboxId, auth, address, aliases) : this.#delegatedSource(tenantId, mailboxId, auth, address, aliases);
      } catch (error) {
        source = { acquire: () => Promise.reject(error) };
      }
      cache = new TokenCache({ source, needsAdminRetryMs: this.options.needsAdminRetryMs ?? 60_000 });
      this.#caches.set(key, cache);
    }
    return cache;
  }

  /**
   * `postroom auth sign-in` asks for a device-code sign-in (a Google mailbox: a browser sign-in,
   * `#googleSignIn`). token-service runs the whole flow, so
   * the refresh token is only ever in this process and in the sealed store; the reply carries the
   * code the person types, and the outcome is written to the mailbox's auth state (`signIn`).
   */
  async #handleSignIn(msg: Msg): Promise<void> {
    const reply = (r: SignInReply): void => {
      msg.respond(JSON.stringify(r));
    };
    const at = mailboxOfSubject(this.options.names.subjects.signIn, msg.subject);
    if (at === undefined || !this.#serves(at.tenant, at.mailbox)) return reply(unknownMailbox(msg.subject));
    const { tenant: tenantId, mailbox: mailboxId } = at;
    const log = this.options.logger.child({ tenant: tenantId, mailbox: mailboxId });
    let request: SignInRequest | SignInCode;
    try {
      const body: unknown = JSON.parse(new TextDecoder().decode(msg.data));
      const code = SignInCode.safeParse(body);
      request = code.success ? code.data : SignInRequest.parse(body);
    } catch {
      return reply(failure("transient", "the sign-in request is not a v1 request", null, "upgrade the postroom command"));
    }
    if (request.tenant !== tenantId || request.mailbox !== mailboxId) {
      return reply(failure("unknown-mailbox", `the request names mailbox ${request.tenant}/${request.mailbox} but was sent for ${tenantId}/${mailboxId}`, null, "ask on the subject of the mailbox you mean"));
    }
    const { mailbox } = findMailbox(this.options.config, tenantId, mailboxId)!;
    const auth = delegatedAuthOf(mailbox);
    if (!auth) return reply(failure("needs-admin", `mailbox ${tenantId}/${mailboxId} uses ${mailbox.auth.type} auth, which needs no sign-in`, null, "set auth.type: microsoft-delegated or google-delegated to sign a person in"));
    if (auth.type === "google-delegated" || "code" in request || request.flow === "browser") {
      let source: BrowserSignIn;
      try {
        source = auth.type === "google-delegated" ? this.#googleSource(tenantId, mailboxId, auth, mailbox.address, mailbox.aliases) : this.#delegatedSource(tenantId, mailboxId, auth, mailbox.address, mailbox.aliases);
      } catch (error) {
        const f = classifyTokenFailure(error);
        return reply(failure(f.kind, f.message, f.code, f.fix));
      }
      return this.#browserSignIn(tenantId, mailboxId, auth.type, mailbox.address, source, request, reply);
    }
    log.info({}, "delegated sign-in requested");
    let source: MicrosoftDelegatedSource;
    let started: Awaited<ReturnType<MicrosoftDelegatedSource["signIn"]>>;
    try {
      source = this.#delegatedSource(tenantId, mailboxId, auth, mailbox.address, mailbox.aliases);
      started = await source.signIn();
    } catch (error) {
      const f = classifyTokenFailure(error);
      log.warn({ code: f.code, problem: f.message }, "delegated sign-in could not start");
      return reply(failure(f.kind, f.message, f.code, f.fix));
    }
    const id = randomUUID();
    const key = `${tenantId}.${mailboxId}`;
    this.#signIns.set(key, { id, state: "pending", message: null, at: new Date().toISOString() });
    this.#publish(tenantId, mailboxId, "microsoft-delegated", { state: "needs-admin", code: "sign-in-pending", message: `waiting for ${mailbox.address} to sign in`, fix: `open ${started.start.verificationUri} and enter the code shown by postroom auth sign-in` }, null);
    log.info({ expiresAt: started.start.expiresAt.toISOString() }, "delegated sign-in started; waiting for the person to sign in");
    reply({ version: "v1", signInId: id, verificationUri: started.start.verificationUri, userCode: started.start.userCode, message: started.start.message, expiresAt: started.start.expiresAt.toISOString() });
    started.done.then(
      (username) => {
        // A new grant: forget the old failure and backoff at once, instead of after needsAdminRetryMs.
        this.#caches.delete(["msd", tenantId, mailboxId].join("|"));
        this.#signIns.set(key, { id, state: "done", message: `signed in as ${username}`, at: new Date().toISOString() });
        log.info({}, "delegated sign-in finished; the grant is stored sealed");
        this.#publish(tenantId, mailboxId, "microsoft-delegated", { state: "ok", code: null, message: null, fix: null }, null);
      },
      (error: unknown) => {
        const f = classifyTokenFailure(error);
        this.#signIns.set(key, { id, state: "failed", message: f.message, at: new Date().toISOString() });
        log.warn({ code: f.code, problem: f.message }, "delegated sign-in failed");
        this.#publish(tenantId, mailboxId, "microsoft-delegated", { state: "needs-admin", code: f.code ?? "sign-in-failed", message: f.message, fix: `run ${this.#signInCommand(tenantId, mailboxId)} again` }, null);
      },
    );
  }

  /**
   * A browser sign-in (Google's only one; Microsoft's with --browser), in two requests on the same
   * subject: the first (with the CLI's loopback `redirectUri`) gets the address to open; the
   * second brings the code the browser was redirected with. Between them token-service alone
   * holds the PKCE verifier, sealed in the grant store.
   */
  async #browserSignIn(
    tenantId: string,
    mailboxId: string,
    provider: "google-delegated" | "microsoft-delegated",
    address: string,
    source: BrowserSignIn,
    request: SignInRequest | SignInCode,
    reply: (r: SignInReply) => void,
  ): Promise<void> {
    const log = this.options.logger.child({ tenant: tenantId, mailbox: mailboxId });
    const key = `${tenantId}.${mailboxId}`;
    if (!("code" in request)) {
      if (request.redirectUri === undefined) return reply(failure("needs-admin", "this sign-in needs a browser and a loopback redirect", "flow-unsupported", "upgrade the postroom command (Google's device flow does not grant the Gmail scope)"));
      const id = randomUUID();
      try {
        const started = await source.startBrowserSignIn(id, request.redirectUri);
        this.#signIns.set(key, { id, state: "pending", message: null, at: new Date().toISOString() });
        this.#publish(tenantId, mailboxId, provider, { state: "needs-admin", code: "sign-in-pending", message: `waiting for ${address} to sign in`, fix: "finish the sign-in in the browser postroom auth sign-in opened" }, null);
        log.info({ expiresAt: started.expiresAt.toISOString() }, "browser sign-in started; waiting for the redirect");
        return reply({ version: "v1", signInId: id, authorizationUrl: started.authorizationUrl, expiresAt: started.expiresAt.toISOString() });
      } catch (error) {
        const f = classifyTokenFailure(error);
        log.warn({ code: f.code, problem: f.message }, "browser sign-in could not start");
        return reply(failure(f.kind, f.message, f.code, f.fix));
      }
    }
    try {
      const account = await source.completeBrowserSignIn(request.signInId, request.state, request.code);
      this.#caches.delete(["msd", tenantId, mailboxId].join("|"));
      this.#signIns.set(key, { id: request.signInId, state: "done", message: `signed in as ${account}`, at: new Date().toISOString() });
      log.info({}, "browser sign-in finished; the grant is stored sealed");
      this.#publish(tenantId, mailboxId, provider, { state: "ok", code: null, message: null, fix: null }, null);
      reply({ version: "v1", signInId: request.signInId, account });
    } catch (error) {
      const f = classifyTokenFailure(error);
      this.#signIns.set(key, { id: request.signInId, state: "failed", message: f.message, at: new Date().toISOString() });
      log.warn({ code: f.code, problem: f.message }, "browser sign-in failed");
      this.#publish(tenantId, mailboxId, provider, { state: "needs-admin", code: f.code ?? "sign-in-failed", message: f.message, fix: `run ${this.#signInCommand(tenantId, mailboxId)} again` }, null);
      reply(failure(f.kind, f.message, f.code, f.fix));
    }
  }

  /** The token cache of one credential, created on first use. */
  #cacheFor(auth: OAuthAuth, address: string, purpose: CredentialPurpose): TokenCache {
    const env = this.options.env ?? process.env;
    let key: string;
    let build: () => Promise<{ fingerprint: string; create: () => TokenSource }>;
    if (auth.type === "microsoft365") {
      // Graph tokens are for another resource than Exchange's IMAP/POP/SMTP: a cache of their own.
      const scope = purpose === "graph" ? `${GRAPH_ENDPOINTS[auth.cloud as MicrosoftCloudName]}/.default` : undefined;
      key = ["ms", auth.cloud, auth.authorityHost ?? "", auth.tenantId, auth.clientId, auth.clientSecret ?? "", auth.certificate?.certificate ?? "", scope ?? ""].join("|");
      build = async () => {
        const clientSecret = auth.clientSecret === undefined ? undefined : await resolveConfigSecret(auth.clientSecret, env, "clientSecret");
        const certificate =
          auth.certificate === undefined
            ? undefined
            : {
                certificatePem: await resolveConfigSecret(auth.certificate.certificate, env, "certificate.certificate"),
                privateKeyPem: await resolveConfigSecret(auth.certificate.privateKey, env, "certificate.privateKey"),
              };
        return {
          fingerprint: secretFingerprint(clientSecret, certificate?.certificatePem, certificate?.privateKeyPem),
          create: () =>
            new MicrosoftTokenSource({
              tenantId: auth.tenantId,
              clientId: auth.clientId,
              cloud: auth.cloud as MicrosoftCloudName,
              ...(clientSecret === undefined ? {} : { clientSecret }),
              ...(certificate === undefined ? {} : { certificate }),
              ...(auth.authorityHost === undefined ? {} : { authorityHost: auth.authorityHost }),
              ...(scope === undefined ? {} : { scope }),
            }),
        };
      };
    } else {
      // sub = the mailbox: one token per mailbox.
      key = ["google", auth.keyFile, auth.tokenUrl ?? "", address].join("|");
      build = async () => {
        const text = await resolveConfigSecret(auth.keyFile, env, "keyFile");
        return { fingerprint: secretFingerprint(text), create: () => new GoogleTokenSource(parseServiceAccountKey(text), address, auth.tokenUrl) };
      };
    }
    let cache = this.#caches.get(key);
    if (!cache) {
      cache = new TokenCache({ source: new ResolvingSource(build, auth.type, this.options.events), needsAdminRetryMs: this.options.needsAdminRetryMs ?? 60_000 });
      this.#caches.set(key, cache);
    }
    return cache;
  }

  /**
   * Logs and publishes expiry warnings for every served mailbox's client secret (by the config's
   * date) and certificate (by its notAfter). Runs at start and every `expiryCheckMs`.
   */
  async checkExpiry(now = new Date()): Promise<Map<string, ExpiryWarning[]>> {
    const env = this.options.env ?? process.env;
    const tenants = this.options.tenants;
    for (const { tenant, mailbox } of allMailboxes(this.options.config)) {
      if (tenants?.length && !tenants.includes(tenant.id)) continue;
      const warnings: ExpiryWarning[] = [];
      for (const auth of [mailbox.auth, mailbox.smtp?.auth]) {
        if (auth?.type !== "microsoft365") continue;
        let certificatePem: string | undefined;
        if (auth.certificate) certificatePem = await resolveSecret(auth.certificate.certificate, env).catch(() => undefined);
        for (const w of expiryWarnings({ clientSecretExpires: auth.clientSecretExpires, certificatePem }, now, this.options.expiryWarnDays)) {
          if (!warnings.some((x) => x.what === w.what && x.expiresAt.getTime() === w.expiresAt.getTime())) warnings.push(w);
        }
      }
      const key = `${tenant.id}.${mailbox.id}`;
      this.#warnings.set(key, warnings);
      for (const w of warnings) {
        this.options.logger.warn({ tenant: tenant.id, mailbox: mailbox.id, what: w.what, expiresAt: w.expiresAt.toISOString(), daysLeft: w.daysLeft, fix: w.fix }, "credential expires soon");
      }
      if (warnings.length > 0) this.#publish(tenant.id, mailbox.id, mailbox.auth.type, { state: "ok", code: null, message: null, fix: null }, null, true);
    }
    return this.#warnings;
  }

  /** The expiry warnings last computed for a mailbox. */
  warningsFor(tenant: string, mailbox: string): ExpiryWarning[] {
    return this.#warnings.get(`${tenant}.${mailbox}`) ?? [];
  }

  /**
   * Writes the mailbox's auth state to KV when it changed (state, code or token expiry); returns
   * whether it changed. Never awaited by a reply: publishing must not slow a login down.
   */
  #publish(
    tenant: string,
    mailbox: string,
    provider: MailboxAuthStatus["provider"],
    s: Pick<MailboxAuthStatus, "state" | "code" | "message" | "fix">,
    tokenExpiresAt: Date | null,
    keepState = false,
  ): boolean {
    const key = `${tenant}.${mailbox}`;
    // Fast path for the common case (a cached token served again): nothing changed, so nothing
    // to serialise. Expiry-warning updates (keepState) take the full path and forget the
    // signature, since they republish whatever state was there.
    const signIn = this.#signIns.get(key);
    const signature = `${s.state}|${s.code ?? ""}|${tokenExpiresAt?.getTime() ?? ""}|${signIn?.id ?? ""}|${signIn?.state ?? ""}`;
    if (keepState) this.#signatures.delete(key);
    else if (this.#signatures.get(key) === signature) return false;
    else this.#signatures.set(key, signature);
    const previousText = this.#published.get(key);
    const previous = previousText === undefined ? undefined : (JSON.parse(previousText) as Omit<MailboxAuthStatus, "updatedAt">);
    const warnings = this.warningsFor(tenant, mailbox).map((w) => ({ what: w.what, expiresAt: w.expiresAt.toISOString(), message: w.message, fix: w.fix }));
    const state = keepState && previous ? previous : s;
    const status: Omit<MailboxAuthStatus, "updatedAt"> = {
      version: "v1",
      tenant,
      mailbox,
      provider,
      state: state.state,
      code: state.code,
      message: state.message,
      fix: state.fix,
      tokenExpiresAt: tokenExpiresAt?.toISOString() ?? (keepState ? (previous?.tokenExpiresAt ?? null) : null),
      warnings,
      ...(signIn ? { signIn } : {}),
    };
    const text = JSON.stringify(status);
    if (text === previousText) return false;
    const stateChanged = previous === undefined || previous.state !== status.state || previous.code !== status.code;
    this.#published.set(key, text);
    const kv = this.options.statusKv;
    if (kv) {
      kv.put(this.options.names.mailboxAuthKey(tenant, mailbox), JSON.stringify({ ...status, updatedAt: new Date().toISOString() })).catch((error: unknown) => {
        this.options.logger.warn({ tenant, mailbox, problem: (error as Error).message }, "could not publish the auth state");
      });
    }
    return stateChanged;
  }

  async stop(): Promise<void> {
    // Drain: stop taking requests, finish answering those in hand, then stop the expiry timer.
    // A device-code sign-in still polling is abandoned: its code was for this process only. A
    // browser sign-in waits in the store, for any replica to finish.
    clearInterval(this.#expiryTimer);
    for (const source of this.#delegated.values()) source.cancelSignIn();
    await Promise.all(this.#subs.map((s) => s.drain()));
    this.#subs = [];
    await Promise.all([...this.#handling]);
  }
}

/** Resolves a secret reference of an OAuth credential, naming the config field (never the value) on failure. */
async function resolveConfigSecret(ref: string, env: NodeJS.ProcessEnv, field: string): Promise<string> {
  try {
    return await resolveSecret(ref, env);
  } catch (error) {
    const message = error instanceof SecretError ? error.message : `the ${field} reference could not be resolved`;
    throw new CredentialConfigError(`${field}: ${message}`, "set the environment variable or file named in the config", "secret-unresolved", { cause: error });
  }
}

/** The reply key of a request, if it has a well-formed one (checked again by the schema in #answer). */
function replyKeyOf(data: Uint8Array): string | undefined {
  try {
    const parsed = CredentialRequest.safeParse(JSON.parse(new TextDecoder().decode(data)));
    return parsed.success ? parsed.data.replyKey : undefined;
  } catch {
    return undefined;
  }
}

/** The answer to a request for a mailbox that is not configured here (the subject echoed, nothing else). */
function unknownMailbox(subject: string): CredentialError {
  return failure("unknown-mailbox", `no configured mailbox is served on ${subject}`, null, "add the mailbox to the config file, or ask the token-service that serves its tenant");
}

function failure(kind: CredentialError["error"]["kind"], message: string, code: string | null, fix: string | null): CredentialError {
  return { version: "v1", error: { kind, message, code, fix } };
}
