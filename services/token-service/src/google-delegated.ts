import { randomBytes } from "node:crypto";
import { CodeChallengeMethod, OAuth2Client } from "google-auth-library";
import { CredentialConfigError, TokenEndpointError } from "./classify.js";
import { assertLoopback, savePending, takePending } from "./delegated.js";
import type { GrantStore } from "./grant-store.js";
import type { AccessToken, TokenSource } from "./providers.js";

/** One Google delegated mailbox's settings. The client secret is resolved on every use (rotation). */
export interface GoogleDelegatedMailbox {
  /** `<tenant>.<mailbox>`: the grant's key in the store. */
  key: string;
  /** The mailbox address; the Google account that signs in must be this one (or an alias). */
  address: string;
  aliases?: string[];
  clientId: string;
  clientSecret: () => Promise<string>;
  scopes: string[];
  authorizeUrl?: string;
  tokenUrl?: string;
  /** The exact command that signs the mailbox in again, for every needs-admin answer. */
  signInCommand: string;
  /** Deadline of one token request (default 15 s). */
  timeoutMs?: number;
  /** How long a started sign-in waits for the browser's redirect (default 10 min). */
  signInTtlMs?: number;
}

/** What is sealed in the grant store for a Google mailbox. */
interface StoredGrant {
  provider: "google";
  account: string;
  refreshToken: string;
}

/** Google's answer to a token request, as gaxios reports a refusal. */
interface GaxiosLike {
  response?: { status?: number; data?: { error?: string; error_description?: string } };
  code?: string;
}

/**
 * Delegated Google tokens for one mailbox. Sign-in is the authorization-code flow of an installed
 * app: PKCE (S256), a `state` checked in constant time, and a loopback redirect the `postroom`
 * command listens on. Google's device flow does not grant the Gmail scope, so this is the only
 * delegated flow Gmail has. token-service keeps the code verifier, redeems the code with the
 * client secret, and seals the refresh token; the command only ever holds the one-use code.
 * Fresh access tokens come from the refresh token (`google-auth-library`'s OAuth2Client); when
 * Google rotates it, the new one is sealed before the access token is handed out.
 */
export class GoogleDelegatedSource implements TokenSource {
  constructor(
    private readonly m: GoogleDelegatedMailbox,
    private readonly store: GrantStore,
  ) {}

  async #client(redirectUri?: string): Promise<OAuth2Client> {
    return new OAuth2Client({
      clientId: this.m.clientId,
      clientSecret: await this.m.clientSecret(),
      ...(redirectUri === undefined ? {} : { redirectUri }),
      endpoints: {
        ...(this.m.authorizeUrl ? { oauth2AuthBaseUrl: this.m.authorizeUrl } : {}),
        ...(this.m.tokenUrl ? { oauth2TokenUrl: this.m.tokenUrl } : {}),
      },
    });
  }

  #accepts(account: string | undefined): boolean {
    const a = (account ?? "").toLowerCase();
    return a === this.m.address.toLowerCase() || (this.m.aliases ?? []).some((x) => x.toLowerCase() === a);
  }

  async #grant(): Promise<StoredGrant | undefined> {
    const text = await this.store.load(this.m.key);
    if (text === undefined) return undefined;
    try {
      const g = JSON.parse(text) as Partial<StoredGrant>;
      return g.provider === "google" && typeof g.refreshToken === "string" && typeof g.account === "string" ? (g as StoredGrant) : undefined;
    } catch {
      return undefined;
    }
  }

  async acquire(): Promise<AccessToken> {
    const grant = await this.#grant();
    if (grant === undefined || !this.#accepts(grant.account)) {
      throw new CredentialConfigError(`${this.m.address} has not been signed in (delegated OAuth keeps a refresh token from one sign-in)`, `run ${this.m.signInCommand}`, "not-signed-in");
    }
    const client = await this.#client();
    client.setCredentials({ refresh_token: grant.refreshToken });
    // The client keeps the refresh token it was given in its credentials even when Google sends a
    // new one; the 'tokens' event carries Google's answer as it came.
    let rotated: string | undefined;
    client.on("tokens", (t) => (rotated = t.refresh_token ?? rotated));
    const { token, credentials } = await this.#deadline(
      client.getAccessToken().then((r) => ({ token: r.token, credentials: client.credentials })),
    );
    if (!token) throw new Error("Google answered without an access token");
    if (rotated && rotated !== grant.refreshToken) {
      // Rotated: the new refresh token is sealed before this access token leaves the process.
      await this.store.save(this.m.key, JSON.stringify({ ...grant, refreshToken: rotated } satisfies StoredGrant));
    }
    const expiresAt = new Date(credentials.expiry_date ?? Date.now() + 3_600_000);
    return { token, expiresAt };
  }

  /**
   * Starts a browser sign-in that will come back to `redirectUri` (a loopback address the command
   * listens on). Returns the address to open; only the PKCE challenge and `state` are in it.
   */
  async startBrowserSignIn(id: string, redirectUri: string): Promise<{ authorizationUrl: string; expiresAt: Date }> {
    assertLoopback(redirectUri);
    const client = await this.#client(redirectUri);
    const { codeVerifier, codeChallenge } = await client.generateCodeVerifierAsync();
    const state = randomBytes(24).toString("base64url");
    const expiresAt = new Date(Date.now() + (this.m.signInTtlMs ?? 600_000));
    await savePending(this.store, this.m.key, { id, state, codeVerifier: codeVerifier!, redirectUri, expiresAt: expiresAt.toISOString() });
    const authorizationUrl = client.generateAuthUrl({
      access_type: "offline",
      // Google gives a refresh token only on consent: ask for it every time, so a second sign-in
      // (after a revocation) gets one too.
      prompt: "consent",
      scope: [...new Set([...this.m.scopes, "openid", "email"])],
      state,
      login_hint: this.m.address,
      code_challenge: codeChallenge!,
      code_challenge_method: CodeChallengeMethod.S256,
    });
    return { authorizationUrl, expiresAt };
  }

  /**
   * Finishes the sign-in `id` with what the browser brought back. The code is redeemed with the
   * verifier kept here; the account must be the mailbox's own, or the grant is not kept.
   */
  async completeBrowserSignIn(id: string, state: string, code: string): Promise<string> {
    const pending = await takePending(this.store, this.m.key, id, state, this.m.signInCommand);
    const client = await this.#client(pending.redirectUri);
    const { tokens } = await this.#deadline(client.getToken({ code, codeVerifier: pending.codeVerifier, redirect_uri: pending.redirectUri }));
    const account = emailOf(tokens.id_token);
    if (!this.#accepts(account)) {
      throw new CredentialConfigError(`signed in as ${account ?? "an account without an address"}, not as the mailbox ${this.m.address}: the grant was discarded`, "sign in with the mailbox's own Google account", "wrong-account");
    }
    if (!tokens.refresh_token) {
      throw new CredentialConfigError("Google gave no refresh token", "remove Postroom's access at https://myaccount.google.com/permissions, then sign in again", "no-refresh-token");
    }
    await this.store.save(this.m.key, JSON.stringify({ provider: "google", account: account!, refreshToken: tokens.refresh_token } satisfies StoredGrant));
    return account!;
  }

  /** One token request, bounded; Google's refusals become errors the classifier and the operator read. */
  async #deadline<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.m.timeoutMs ?? 15_000;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`token request timed out after ${timeoutMs} ms`), { name: "TimeoutError" })), timeoutMs);
    });
    try {
      return await Promise.race([work, deadline]);
    } catch (error) {
      throw this.#explain(error);
    } finally {
      clearTimeout(timer);
    }
  }

  #explain(error: unknown): unknown {
    const e = error as GaxiosLike;
    const status = e.response?.status;
    const data = e.response?.data;
    if (status === undefined || typeof data !== "object" || data === null) return error;
    if (data.error === "invalid_grant") {
      return new CredentialConfigError(
        `the sign-in of ${this.m.address} is no longer valid (invalid_grant: ${data.error_description ?? "revoked, password changed, or expired"})`,
        `sign the mailbox in again: ${this.m.signInCommand}`,
        "invalid_grant",
        { cause: error },
      );
    }
    return new TokenEndpointError(status, data.error ?? `http_${status}`, data.error_description ?? "no description", { cause: error });
  }
}

/**
 * The `email` claim of the ID token Google returned from its token endpoint over TLS, to this
 * client: OpenID Connect lets a client read such a token without checking its signature.
 */
function emailOf(idToken: string | null | undefined): string | undefined {
  const payload = idToken?.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { email?: unknown };
    return typeof claims.email === "string" ? claims.email : undefined;
  } catch {
    return undefined;
  }
}
