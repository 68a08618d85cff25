/** The login limits in force (config `agentApi.login`). */
export interface LoginLimits {
  /** Wrong passwords for one account before each next attempt must wait (the doubling backoff). */
  freeAttempts: number;
  /** Wrong passwords in a row for one account before it is locked. */
  lockAfter: number;
  /** Wrong passwords from one client address, any account, before the address is locked. */
  addressLockAfter: number;
  /** How long a lockout lasts; failures older than this are forgotten. */
  lockoutSeconds: number;
}

/** Why an attempt is refused before its password is even looked at. */
export interface LoginRefusal {
  /** `account`: this tenant and agent; `address`: this client address, whichever account. */
  scope: "account" | "address";
  /** `backoff`: wait after a few failures; `locked`: the full lockout. */
  kind: "backoff" | "locked";
  /** Whole seconds until an attempt is looked at again (the Retry-After header). */
  retryAfterSeconds: number;
}

interface Failures {
  count: number;
  last: number;
  /** No attempt is looked at before this time. */
  blockedUntil: number;
}

/** Entries kept at most per scope; beyond it the oldest go (a flood of made-up agent ids must not fill memory). */
const MAX_ENTRIES = 10_000;

/**
 * Login backoff and lockout for the agent API, per account (tenant + agent as typed) and per
 * client address. Pure and clock-free: every call takes `now`.
 *
 * After `freeAttempts` wrong passwords for an account, each further one makes its next attempt
 * wait 1 s, then 2 s, 4 s … (capped at the lockout); after `lockAfter` in a row it is locked for
 * `lockoutSeconds`. An address has no doubling wait, only its lock after `addressLockAfter`
 * failures: many agents share one address behind a call centre's NAT, and a few typos among them
 * must not slow everyone down. While an account or
 * address waits, every attempt is refused without looking at the password — the right one too:
 * otherwise the answer to a guess made during the lockout would still tell the guesser whether it
 * was right. A refused attempt does not extend the wait (a legitimate agent retrying is not
 * punished for it), but the next wrong password after a lockout locks again at once, because the
 * count is only forgotten once `lockoutSeconds` pass with no failure and no wait, or, for an account, by
 * a correct login. An address's count is not reset by a correct login: one agent's own account
 * must not let its owner reset the budget for guessing at others.
 *
 * Two scopes because each alone fails: per account only, one address can try one password on
 * every agent (spraying); per address only, a botnet tries many passwords on one agent. The price
 * is that an attacker can lock a real agent out for `lockoutSeconds` by guessing at her account:
 * the refusal says so and the lock expires by itself.
 */
export class LoginGuard {
  readonly #accounts = new Map<string, Failures>();
  readonly #addresses = new Map<string, Failures>();

  constructor(private readonly limits: LoginLimits) {}

  /** The refusal for an attempt now, or undefined when it may be checked. The longer wait wins. */
  check(account: string, address: string, now: number): LoginRefusal | undefined {
    const refusals: LoginRefusal[] = [];
    for (const [scope, map, key, lockAt] of this.#scopes(account, address)) {
      const f = this.#current(map, key, now);
      if (!f || f.blockedUntil <= now) continue;
      refusals.push({ scope, kind: f.count >= lockAt ? "locked" : "backoff", retryAfterSeconds: Math.max(1, Math.ceil((f.blockedUntil - now) / 1000)) });
    }
    return refusals.sort((a, b) => b.retryAfterSeconds - a.retryAfterSeconds)[0];
  }

  /** Records a wrong password (or unknown tenant/agent); returns the wait it causes, if any. */
  failed(account: string, address: string, now: number): LoginRefusal | undefined {
    for (const [scope, map, key, lockAt] of this.#scopes(account, address)) {
      const f = this.#current(map, key, now) ?? { count: 0, last: now, blockedUntil: 0 };
      f.count++;
      f.last = now;
      const lockoutMs = this.limits.lockoutSeconds * 1000;
      if (f.count >= lockAt) f.blockedUntil = now + lockoutMs;
      else if (scope === "account" && f.count >= this.limits.freeAttempts) f.blockedUntil = now + Math.min(lockoutMs, 1000 * 2 ** (f.count - this.limits.freeAttempts));
      // Re-inserted so that the map's order is oldest failure first (what #trim drops).
      map.delete(key);
      map.set(key, f);
      this.#trim(map, now);
    }
    return this.check(account, address, now);
  }

  /** A correct login: the account starts afresh (its address does not; see the class comment). */
  succeeded(account: string): void {
    this.#accounts.delete(account);
  }

  /** How many wrong attempts are remembered (for tests and the metrics). */
  get size(): { accounts: number; addresses: number } {
    return { accounts: this.#accounts.size, addresses: this.#addresses.size };
  }

  #scopes(account: string, address: string): ["account" | "address", Map<string, Failures>, string, number][] {
    return [
      ["account", this.#accounts, account, this.limits.lockAfter],
      ["address", this.#addresses, address, this.limits.addressLockAfter],
    ];
  }

  /** The entry, unless its failures are old enough to be forgotten. */
  #current(map: Map<string, Failures>, key: string, now: number): Failures | undefined {
    const f = map.get(key);
    // Counted from the end of the wait as well: right after a lockout the count still stands.
    if (f && f.blockedUntil <= now && now - Math.max(f.last, f.blockedUntil) >= this.limits.lockoutSeconds * 1000) {
      map.delete(key);
      return undefined;
    }
    return f;
  }

  #trim(map: Map<string, Failures>, now: number): void {
    if (map.size <= MAX_ENTRIES) return;
    for (const [key] of map) {
      this.#current(map, key, now);
      if (map.size <= MAX_ENTRIES) return;
    }
    // Still full of live entries: the oldest failures go first.
    for (const [key] of map) {
      map.delete(key);
      if (map.size <= MAX_ENTRIES) return;
    }
  }
}

/** The account key of a login attempt: tenant and agent as typed (also unknown ones: guessing names is limited too). */
export function accountKey(tenant: string, agent: string): string {
  return `${tenant.slice(0, 128)}\u0000${agent.slice(0, 128)}`;
}
