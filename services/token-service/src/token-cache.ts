import { classifyTokenFailure, type TokenFailure } from "./classify.js";
import type { AccessToken, TokenSource } from "./providers.js";

/** A token request the cache refused without asking the identity platform (still backing off). */
export class TokenUnavailableError extends Error {
  override name = "TokenUnavailableError";
  constructor(
    readonly failure: TokenFailure,
    /** When the next attempt may reach the identity platform. */
    readonly retryAt: Date,
    options?: { cause?: unknown },
  ) {
    super(failure.message, options);
  }
}

/** Options for {@link TokenCache}. */
export interface TokenCacheOptions {
  /** Fetches a fresh token. */
  source: TokenSource;
  /** Clock (tests). */
  now?: () => number;
  /** First backoff after a transient failure (default 1 s), doubled up to `maxBackoffMs` (default 60 s), with jitter. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** After a needs-admin failure, the identity platform is asked again no sooner than this (default 5 min). */
  needsAdminRetryMs?: number;
  /** Called after every fetch, successful or not (auth state publication, metrics). */
  onResult?: (result: { ok: true; token: AccessToken } | { ok: false; failure: TokenFailure }) => void;
  random?: () => number;
}

/**
 * One credential's token: cached, refreshed ahead of expiry, fetched by at most one request at a
 * time however many callers ask, and backed off after failures.
 *
 * Timing, for a token of lifetime L: it is served while at least min(L/4, 2 min) remains (so the
 * caller's login happens with a valid token even on a slow machine); from the moment less than
 * min(L/2, 5 min) remains, the first request starts a background refresh and still gets the
 * current token. With 60–90-minute Exchange tokens that is a refresh 5 minutes before expiry;
 * with 5-second test tokens, after 2.5 s.
 */
export class TokenCache {
  #token: (AccessToken & { acquiredAt: number }) | undefined;
  #inflight: Promise<AccessToken> | undefined;
  #failure: { failure: TokenFailure; retryAt: number; error: unknown } | undefined;
  #attempt = 0;
  /** Number of fetches started: what the identity platform saw. */
  fetches = 0;

  constructor(private readonly o: TokenCacheOptions) {}

  #now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** The token currently held, if any (not necessarily still valid). */
  get current(): AccessToken | undefined {
    return this.#token;
  }

  /**
   * A valid token. `force` (the caller's server refused the last one) fetches a new one; the forced
   * fetch is shared, so many callers reporting the same rejection cause one token request, and a
   * token fetched less than a second ago counts as that fresh one.
   */
  async get(force = false): Promise<AccessToken> {
    const now = this.#now();
    const t = this.#token;
    if (force) {
      // A token fetched in the last second is already the fresh one another rejected caller asked for.
      if (t && now - t.acquiredAt < 1000 && t.expiresAt.getTime() > now) return t;
      return this.#fetch(true);
    }
    if (t) {
      const lifetime = Math.max(1, t.expiresAt.getTime() - t.acquiredAt);
      const remaining = t.expiresAt.getTime() - now;
      const minRemaining = Math.min(lifetime / 4, 120_000);
      const refreshAhead = Math.min(lifetime / 2, 300_000);
      if (remaining > minRemaining) {
        if (remaining < refreshAhead && !this.#inflight && !this.#backingOff(now)) {
          // Refresh in the background; this caller keeps the still-valid token.
          this.#fetch(false).catch(() => undefined);
        }
        return t;
      }
      // Too close to expiry to hand out happily — but if the platform cannot give a new one right
      // now, a token that still has a little life beats no token at all.
      const lastResort = Math.min(lifetime / 10, 30_000);
      return this.#fetch(false).catch((error: unknown) => {
        if (t.expiresAt.getTime() - this.#now() > lastResort) return t;
        throw error;
      });
    }
    return this.#fetch(false);
  }

  #backingOff(now: number): boolean {
    return this.#failure !== undefined && now < this.#failure.retryAt;
  }

  #fetch(force: boolean): Promise<AccessToken> {
    if (this.#inflight) return this.#inflight;
    const now = this.#now();
    const failed = this.#failure;
    // A forced refresh may skip a transient backoff (the server just proved the old token bad),
    // never a needs-admin one: asking again cannot succeed until a person changes something.
    if (failed && now < failed.retryAt && !(force && failed.failure.kind === "transient")) {
      return Promise.reject(new TokenUnavailableError(failed.failure, new Date(failed.retryAt), { cause: failed.error }));
    }
    this.fetches++;
    const p = (async () => {
      try {
        const token = await this.o.source.acquire();
        this.#token = { ...token, acquiredAt: this.#now() };
        this.#failure = undefined;
        this.#attempt = 0;
        this.o.onResult?.({ ok: true, token });
        return token;
      } catch (error) {
        const failure = classifyTokenFailure(error);
        const delay = failure.kind === "needs-admin" ? (this.o.needsAdminRetryMs ?? 300_000) : this.#backoffMs();
        this.#failure = { failure, retryAt: this.#now() + delay, error };
        this.o.onResult?.({ ok: false, failure });
        throw new TokenUnavailableError(failure, new Date(this.#now() + delay), { cause: error });
      } finally {
        this.#inflight = undefined;
      }
    })();
    this.#inflight = p;
    return p;
  }

  /** Capped exponential backoff with full jitter over the upper half. */
  #backoffMs(): number {
    const base = this.o.baseBackoffMs ?? 1000;
    const max = this.o.maxBackoffMs ?? 60_000;
    const ceiling = Math.min(max, base * 2 ** this.#attempt++);
    return Math.round(ceiling / 2 + (this.o.random ?? Math.random)() * (ceiling / 2));
  }
}
