import { createHash, randomUUID, sign, X509Certificate } from "node:crypto";
import { ConfidentialClientApplication, type Configuration } from "@azure/msal-node";
import { CredentialConfigError, TokenEndpointError } from "./classify.js";

/** An access token and when it stops being valid. */
export interface AccessToken {
  token: string;
  expiresAt: Date;
}

/** Anything that can fetch a fresh token (no caching: {@link TokenCache} does that). */
export interface TokenSource {
  /** A fresh token from the identity platform. */
  acquire(): Promise<AccessToken>;
}

/** Per national cloud: token host, the Exchange Online scope and the mail hosts. */
export const MICROSOFT_CLOUDS = {
  global: {
    authorityHost: "https://login.microsoftonline.com",
    scope: "https://outlook.office365.com/.default",
    imapHost: "outlook.office365.com",
    smtpHost: "smtp.office365.com",
  },
  usgov: {
    authorityHost: "https://login.microsoftonline.us",
    scope: "https://outlook.office365.us/.default",
    imapHost: "outlook.office365.us",
    smtpHost: "smtp.office365.us",
  },
  china: {
    authorityHost: "https://login.partner.microsoftonline.cn",
    scope: "https://partner.outlook.cn/.default",
    imapHost: "partner.outlook.cn",
    smtpHost: "smtp.partner.outlook.cn",
  },
} as const;
export type MicrosoftCloudName = keyof typeof MICROSOFT_CLOUDS;

/** Resolved (secret-bearing) Microsoft client-credential settings. Never logged. */
export interface MicrosoftCredentials {
  tenantId: string;
  clientId: string;
  clientSecret?: string;
  certificate?: { certificatePem: string; privateKeyPem: string };
  cloud: MicrosoftCloudName;
  /** Overrides the cloud's token host (tests, proxies). */
  authorityHost?: string;
  /** Overrides the cloud's scope (`postroom test-auth --scope`). */
  scope?: string;
  /** Deadline of one token request (default 15 s). */
  timeoutMs?: number;
}

/** The scope requested for a mailbox's cloud (or the override). */
export function microsoftScope(c: Pick<MicrosoftCredentials, "cloud" | "scope">): string {
  return c.scope ?? MICROSOFT_CLOUDS[c.cloud].scope;
}

/** The token host in use. */
export function microsoftAuthorityHost(c: Pick<MicrosoftCredentials, "cloud" | "authorityHost">): string {
  return (c.authorityHost ?? MICROSOFT_CLOUDS[c.cloud].authorityHost).replace(/\/+$/, "");
}

/** The SHA-256 thumbprint (hex) msal puts into the client assertion's `x5t#S256` header. */
export function certificateThumbprint(certificatePem: string): string {
  try {
    return new X509Certificate(certificatePem).fingerprint256.replaceAll(":", "").toLowerCase();
  } catch (cause) {
    throw new CredentialConfigError("the certificate is not a valid PEM certificate", "give the PEM certificate (-----BEGIN CERTIFICATE-----) uploaded to the app registration", "certificate-invalid", { cause });
  }
}

/**
 * msal-node configuration for app-only tokens. The authority is always tenant-specific
 * (`/common` cannot issue client-credential tokens). With a non-default `authorityHost` the
 * authority metadata and instance discovery are given inline and the host is a known authority,
 * so msal-node makes no discovery call to login.microsoftonline.com — nothing leaves the machine
 * in tests, and a proxy host works without Microsoft's discovery endpoint.
 */
export function msalConfiguration(c: MicrosoftCredentials): Configuration {
  const host = microsoftAuthorityHost(c);
  const authority = `${host}/${c.tenantId}`;
  const custom = c.authorityHost !== undefined && host !== MICROSOFT_CLOUDS[c.cloud].authorityHost;
  const credential = c.certificate
    ? { clientCertificate: { thumbprintSha256: certificateThumbprint(c.certificate.certificatePem), privateKey: c.certificate.privateKeyPem } }
    : c.clientSecret !== undefined
      ? { clientSecret: c.clientSecret }
      : {};
  const hostName = new URL(host).host;
  return {
    auth: {
      clientId: c.clientId,
      authority,
      ...credential,
      ...(custom
        ? {
            knownAuthorities: [hostName],
            authorityMetadata: JSON.stringify({
              token_endpoint: `${authority}/oauth2/v2.0/token`,
              issuer: `${authority}/v2.0`,
              authorization_endpoint: `${authority}/oauth2/v2.0/authorize`,
              end_session_endpoint: `${authority}/oauth2/v2.0/logout`,
              jwks_uri: `${authority}/discovery/v2.0/keys`,
            }),
            cloudDiscoveryMetadata: JSON.stringify({
              tenant_discovery_endpoint: `${authority}/v2.0/.well-known/openid-configuration`,
              "api-version": "1.1",
              metadata: [{ preferred_network: hostName, preferred_cache: hostName, aliases: [hostName] }],
            }),
          }
        : {}),
    },
    // msal retries some failures itself; the token cache decides retries (with backoff) instead.
    system: { disableInternalRetries: true },
  };
}

/** App-only tokens for Exchange Online from the Microsoft identity platform (msal-node). */
export class MicrosoftTokenSource implements TokenSource {
  readonly #app: ConfidentialClientApplication;
  readonly #scope: string;
  readonly #timeoutMs: number;

  constructor(credentials: MicrosoftCredentials) {
    if (credentials.clientSecret === undefined && credentials.certificate === undefined) {
      throw new CredentialConfigError("no client secret or certificate is configured", "add clientSecret: env:NAME or certificate: { certificate, privateKey }", "AADSTS7000218");
    }
    this.#app = new ConfidentialClientApplication(msalConfiguration(credentials));
    this.#scope = microsoftScope(credentials);
    this.#timeoutMs = credentials.timeoutMs ?? 15_000;
  }

  async acquire(): Promise<AccessToken> {
    // skipCache: the token cache in front of this decides freshness (refresh ahead, forced refresh
    // after a rejection); msal's own cache would hand back a token it considers valid.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`token request timed out after ${this.#timeoutMs} ms`), { name: "TimeoutError" })), this.#timeoutMs);
    });
    try {
      const result = await Promise.race([this.#app.acquireTokenByClientCredential({ scopes: [this.#scope], skipCache: true }), deadline]);
      if (!result?.accessToken || !result.expiresOn) throw new Error("the identity platform answered without a token");
      return { token: result.accessToken, expiresAt: result.expiresOn };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A Google service account's JSON key (the fields Postroom uses). */
export interface GoogleServiceAccountKey {
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
}

/** Parses a service account key file's text; names the missing field without echoing the key. */
export function parseServiceAccountKey(text: string): GoogleServiceAccountKey {
  let key: unknown;
  try {
    key = JSON.parse(text);
  } catch {
    throw new CredentialConfigError("the service account key is not JSON", "download a JSON key: Google Cloud console → IAM → Service accounts → Keys → Add key → JSON", "key-invalid");
  }
  const k = key as Partial<GoogleServiceAccountKey>;
  if (typeof k.client_email !== "string" || typeof k.private_key !== "string") {
    throw new CredentialConfigError("the service account key has no client_email or private_key", "use the JSON key file as downloaded from Google Cloud, unchanged", "key-invalid");
  }
  return k as GoogleServiceAccountKey;
}

const b64url = (value: string | Buffer) => Buffer.from(value).toString("base64url");

/**
 * Google Workspace service account with domain-wide delegation: an RS256 JWT (iss = the service
 * account, sub = the mailbox, scope https://mail.google.com/, aud = the token URL, one hour)
 * exchanged with the jwt-bearer grant. Signed with node:crypto; no Google library needed.
 */
export class GoogleTokenSource implements TokenSource {
  readonly #tokenUrl: string;

  constructor(
    private readonly key: GoogleServiceAccountKey,
    private readonly mailbox: string,
    tokenUrl?: string,
    private readonly timeoutMs = 15_000,
  ) {
    this.#tokenUrl = tokenUrl ?? key.token_uri ?? "https://oauth2.googleapis.com/token";
  }

  /** The signed assertion (exported for tests of its claims). */
  assertion(now = Math.floor(Date.now() / 1000)): string {
    const header = { alg: "RS256", typ: "JWT", ...(this.key.private_key_id ? { kid: this.key.private_key_id } : {}) };
    const claims = { iss: this.key.client_email, sub: this.mailbox, scope: "https://mail.google.com/", aud: this.#tokenUrl, iat: now, exp: now + 3600, jti: randomUUID() };
    const signed = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    let signature: Buffer;
    try {
      signature = sign("sha256", Buffer.from(signed), this.key.private_key);
    } catch (cause) {
      throw new CredentialConfigError("the service account's private_key cannot sign", "use the JSON key file as downloaded, unchanged", "key-invalid", { cause });
    }
    return `${signed}.${b64url(signature)}`;
  }

  async acquire(): Promise<AccessToken> {
    const response = await fetch(this.#tokenUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion: this.assertion() }),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const body = (await response.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error?: string; error_description?: string };
    if (!response.ok || typeof body.access_token !== "string") {
      throw new TokenEndpointError(response.status, body.error ?? `http_${response.status}`, body.error_description ?? "no description");
    }
    return { token: body.access_token, expiresAt: new Date(Date.now() + (body.expires_in ?? 3600) * 1000) };
  }
}

/** A stable, non-reversible fingerprint of secret material, to notice a rotated secret. */
export function secretFingerprint(...parts: Array<string | undefined>): string {
  return createHash("sha256").update(parts.map((p) => p ?? "").join("\u0000")).digest("hex").slice(0, 16);
}
