import { randomBytes, timingSafeEqual } from "node:crypto";
import { CryptoProvider, InteractionRequiredAuthError, PublicClientApplication, type AccountInfo, type DeviceCodeRequest, type ICachePlugin, type INetworkModule, type TokenCacheContext } from "@azure/msal-node";
import { CredentialConfigError } from "./classify.js";
import type { GrantStore } from "./grant-store.js";
import { msalConfiguration, type AccessToken, type MicrosoftCloudName, type TokenSource } from "./providers.js";

/** One delegated mailbox's settings (no secret: a public client has none). */
export interface DelegatedMailbox {
  /** `<tenant>.<mailbox>`: the grant's key in the store. */
  key: string;
  /** The mailbox address; the account that signs in must be this one (or an alias). */
  address: string;
  aliases?: string[];
  clientId: string;
  /** The authority's tenant segment: consumers, organizations or an id. */
  authorityTenant: string;
  scopes: string[];
  cloud: MicrosoftCloudName;
  authorityHost?: string;
  /** The exact command that signs the mailbox in again, for every needs-admin answer. */
  signInCommand: string;
  /** Deadline of one token request (default 15 s). */
  timeoutMs?: number;
  /** msal's HTTP client (tests in one process: one that trusts the fake platform's CA). */
  networkClient?: INetworkModule;
}

/** What a person must do to finish a sign-in (nothing secret: the code is theirs to type). */
export interface DeviceCodeStart {
  userCode: string;
  verificationUri: string;
  message: string;
  expiresAt: Date;
}

/**
 * msal's token cache of one mailbox, loaded from and saved to the sealed grant store around every
 * access. A grant msal has produced but the store has not yet taken (NATS was away) is kept in
 * memory and used before the stored one, so a rotated refresh token is never lost for the old:
 * the new one is either in the store or still in hand and retried on the next access.
 */
class GrantCachePlugin implements ICachePlugin {
  #unsaved: string | undefined;

  constructor(
    private readonly store: GrantStore,
    private readonly key: string,
  ) {}

  async beforeCacheAccess(context: TokenCacheContext): Promise<void> {
    const text = this.#unsaved ?? (await this.store.load(this.key));
    if (text !== undefined) context.tokenCache.deserialize(text);
  }

  async afterCacheAccess(context: TokenCacheContext): Promise<void> {
    if (!context.cacheHasChanged && this.#unsaved === undefined) return;
    const text = context.tokenCache.serialize();
    this.#unsaved = text;
    await this.store.save(this.key, text);
    this.#unsaved = undefined;
  }
}

/** AADSTS codes that mean "this grant is over: a person must sign in again". */
const GRANT_OVER = /AADSTS(50173|70000|70008|700082|50076|50079|65001|50078|53003|9002313|700084)\b/;

/**
 * Delegated tokens for one mailbox: the device-code sign-in (msal's `acquireTokenByDeviceCode`),
 * then fresh access tokens from the stored refresh token (`acquireTokenSilent` with
 * `forceRefresh`: the token cache in front decides when, as for app-only tokens). msal rotates
 * the refresh token on each redemption and the cache plugin seals the new one into the store
 * before the access token is handed out.
 */
export class MicrosoftDelegatedSource implements TokenSource {
  readonly #app: PublicClientApplication;
  #signIn: DeviceCodeRequest | undefined;

  constructor(
    private readonly m: DelegatedMailbox,
    private readonly store: GrantStore,
  ) {
    const base = msalConfiguration({ tenantId: m.authorityTenant, clientId: m.clientId, cloud: m.cloud, ...(m.authorityHost ? { authorityHost: m.authorityHost } : {}) });
    this.#app = new PublicClientApplication({
      ...base,
      system: { ...base.system, ...(m.networkClient ? { networkClient: m.networkClient } : {}) },
      cache: { cachePlugin: new GrantCachePlugin(store, m.key) },
    });
  }

  #accepts(username: string | undefined): boolean {
    const u = (username ?? "").toLowerCase();
    return u === this.m.address.toLowerCase() || (this.m.aliases ?? []).some((a) => a.toLowerCase() === u);
  }

  async #account(): Promise<AccountInfo | undefined> {
    const accounts = await this.#app.getTokenCache().getAllAccounts();
    return accounts.find((a) => this.#accepts(a.username));
  }

  /** True when a grant for the mailbox's own account is stored. */
  async signedIn(): Promise<boolean> {
    return (await this.#account()) !== undefined;
  }

  async acquire(): Promise<AccessToken> {
    const account = await this.#account();
    if (account === undefined) {
      throw new CredentialConfigError(`${this.m.address} has not been signed in (delegated OAuth keeps a refresh token from one sign-in)`, `run ${this.m.signInCommand}`, "not-signed-in");
    }
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.m.timeoutMs ?? 15_000;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`token request timed out after ${timeoutMs} ms`), { name: "TimeoutError" })), timeoutMs);
    });
    try {
      const result = await Promise.race([this.#app.acquireTokenSilent({ account, scopes: this.m.scopes, forceRefresh: true }), deadline]);
      if (!result?.accessToken || !result.expiresOn) throw new Error("the identity platform answered without a token");
      return { token: result.accessToken, expiresAt: result.expiresOn };
    } catch (error) {
      throw this.#explain(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** An ended grant (revoked, password changed, consent withdrawn) becomes a needs-admin error naming the re-sign-in. */
  #explain(error: unknown): unknown {
    const e = error as { errorCode?: string; errorMessage?: string; message?: string; subError?: string };
    const text = `${e.errorMessage ?? ""} ${e.message ?? ""}`;
    const aadsts = /AADSTS(\d+)/.exec(text)?.[0];
    if (error instanceof InteractionRequiredAuthError || e.errorCode === "invalid_grant" || GRANT_OVER.test(text)) {
      return new CredentialConfigError(
        `the sign-in of ${this.m.address} is no longer valid (${aadsts ?? e.errorCode ?? "invalid_grant"}: revoked, password changed, or consent withdrawn)`,
        `sign the mailbox in again: ${this.m.signInCommand}`,
        "invalid_grant",
        { cause: error },
      );
    }
    return error;
  }

  /**
   * Starts a device-code sign-in. Resolves once the identity platform has given the code to show;
   * `done` settles when the person has signed in (the grant is then stored) or the code expired.
   * An account other than the mailbox's own is refused and removed again.
   */
  async signIn(): Promise<{ start: DeviceCodeStart; done: Promise<string> }> {
    this.cancelSignIn();
    let give!: (s: DeviceCodeStart) => void;
    const started = new Promise<DeviceCodeStart>((resolve) => (give = resolve));
    const request: DeviceCodeRequest = {
      scopes: this.m.scopes,
      deviceCodeCallback: (r) => give({ userCode: r.userCode, verificationUri: r.verificationUri, message: r.message, expiresAt: new Date(Date.now() + r.expiresIn * 1000) }),
    };
    this.#signIn = request;
    const flow = this.#app.acquireTokenByDeviceCode(request);
    const done = (async () => {
      const result = await flow;
      if (this.#signIn === request) this.#signIn = undefined;
      const account = result?.account;
      if (!account) throw new Error("the identity platform answered without an account");
      if (!this.#accepts(account.username)) {
        await this.#app.getTokenCache().removeAccount(account);
        throw new Error(`signed in as ${account.username}, not as the mailbox ${this.m.address}: the grant was discarded; sign in with the mailbox's own account`);
      }
      return account.username;
    })();
    // The flow may fail before any code is given (unknown client, network): say so at once.
    const start = await Promise.race([started, done.then(() => Promise.reject(new Error("the sign-in ended before a code was given")))]);
    done.catch(() => undefined);
    if (!start.userCode || !start.verificationUri) {
      // msal hands the device-code endpoint's answer to the callback without reading an error in
      // it (an unknown client id, a confidential client): no code means the platform refused.
      this.cancelSignIn();
      throw new CredentialConfigError(
        "the identity platform gave no device code",
        "check clientId: it must be an app registration with Authentication → Allow public client flows: Yes, usable by the tenant (consumers for Outlook.com, organizations for work accounts)",
        "device-code-refused",
      );
    }
    return { start, done };
  }

  /**
   * Starts a browser sign-in (authorization code with PKCE) that comes back to `redirectUri`, a
   * loopback address the command listens on, for where a browser is at hand. The verifier and
   * state are sealed in the store beside the grant, so any replica can finish it.
   */
  async startBrowserSignIn(id: string, redirectUri: string, ttlMs = 600_000): Promise<{ authorizationUrl: string; expiresAt: Date }> {
    assertLoopback(redirectUri);
    const { verifier, challenge } = await new CryptoProvider().generatePkceCodes();
    const state = randomBytes(24).toString("base64url");
    const expiresAt = new Date(Date.now() + ttlMs);
    await savePending(this.store, this.m.key, { id, state, codeVerifier: verifier, redirectUri, expiresAt: expiresAt.toISOString() });
    const authorizationUrl = await this.#app.getAuthCodeUrl({
      scopes: this.m.scopes,
      redirectUri,
      codeChallenge: challenge,
      codeChallengeMethod: "S256",
      state,
      loginHint: this.m.address,
    });
    return { authorizationUrl, expiresAt };
  }

  /** Finishes the browser sign-in `id`: the code redeemed with the kept verifier; only the mailbox's own account is kept. */
  async completeBrowserSignIn(id: string, state: string, code: string): Promise<string> {
    const pending = await takePending(this.store, this.m.key, id, state, this.m.signInCommand);
    let result;
    try {
      result = await this.#app.acquireTokenByCode({ code, scopes: this.m.scopes, redirectUri: pending.redirectUri, codeVerifier: pending.codeVerifier });
    } catch (error) {
      throw this.#explain(error);
    }
    const account = result?.account;
    if (!account) throw new Error("the identity platform answered without an account");
    if (!this.#accepts(account.username)) {
      await this.#app.getTokenCache().removeAccount(account);
      throw new CredentialConfigError(`signed in as ${account.username}, not as the mailbox ${this.m.address}: the grant was discarded`, "sign in with the mailbox's own account", "wrong-account");
    }
    return account.username;
  }

  /** Stops polling for a sign-in in progress (msal checks the flag between polls). */
  cancelSignIn(): void {
    if (this.#signIn) this.#signIn.cancel = true;
    this.#signIn = undefined;
  }
}

/**
 * A browser sign-in under way: what token-service alone keeps until the redirect comes back,
 * sealed in the grant store under `<mailbox key>=sign-in` (`=` never appears in an id, and the key
 * stays within the `<tenant>.*` keys token-service may write).
 */
export interface PendingSignIn {
  id: string;
  state: string;
  codeVerifier: string;
  redirectUri: string;
  expiresAt: string;
}

const LOOPBACK = /^http:\/\/(127\.0\.0\.1|\[::1\]|localhost)(:\d{1,5})?(\/[^\s?#]*)?$/;

/** A sign-in may only come back to this machine's loopback interface (RFC 8252, section 7.3). */
export function assertLoopback(redirectUri: string): void {
  if (!LOOPBACK.test(redirectUri)) {
    throw new CredentialConfigError(`the redirect address ${redirectUri} is not a loopback http address`, "let postroom auth sign-in choose it (it listens on 127.0.0.1)", "redirect-invalid");
  }
}

function pendingKey(mailboxKey: string): string {
  return `${mailboxKey}=sign-in`;
}

export async function savePending(store: GrantStore, mailboxKey: string, pending: PendingSignIn): Promise<void> {
  await store.save(pendingKey(mailboxKey), JSON.stringify(pending));
}

/**
 * The pending sign-in `id`, checked and removed (one use: a replayed redirect finds nothing). A
 * forged state leaves the real sign-in waiting.
 */
export async function takePending(store: GrantStore, mailboxKey: string, id: string, state: string, signInCommand: string): Promise<PendingSignIn> {
  const text = await store.load(pendingKey(mailboxKey));
  const pending = text === undefined ? undefined : (JSON.parse(text) as PendingSignIn);
  if (pending === undefined || pending.id !== id) throw new CredentialConfigError("no sign-in of this mailbox is waiting for a browser", `run ${signInCommand} again`, "sign-in-unknown");
  if (Date.parse(pending.expiresAt) <= Date.now()) {
    await store.remove(pendingKey(mailboxKey));
    throw new CredentialConfigError("the sign-in took too long and has expired", `run ${signInCommand} again`, "sign-in-expired");
  }
  const a = Buffer.from(state);
  const b = Buffer.from(pending.state);
  if (a.length !== b.length || !timingSafeEqual(a, b)) throw new CredentialConfigError("the browser came back with another sign-in's state", `run ${signInCommand} again, and finish it in the browser it opens`, "state-mismatch");
  await store.remove(pendingKey(mailboxKey));
  return pending;
}
