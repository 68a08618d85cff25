/** A readiness check: resolves true (or void) when ready; false or a throw means not ready. */
export type ReadinessCheck = () => Promise<boolean | void> | boolean | void;

/** The outcome of every check, as /readyz prints it. */
export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, { ok: boolean; problem?: string }>;
}

/**
 * The checks a service registered for /readyz. Each runs with a deadline, so a hung dependency
 * makes the pod unready instead of hanging the probe.
 */
export class Readiness {
  readonly #checks = new Map<string, ReadinessCheck>();

  constructor(private readonly timeoutMs = 2000) {}

  /** Adds (or replaces) a named check. */
  add(name: string, check: ReadinessCheck): void {
    this.#checks.set(name, check);
  }

  async report(): Promise<ReadinessReport> {
    const checks: ReadinessReport["checks"] = {};
    await Promise.all(
      [...this.#checks].map(async ([name, check]) => {
        try {
          const ok = await withDeadline(Promise.resolve(check()), this.timeoutMs);
          checks[name] = ok === false ? { ok: false, problem: "not ready" } : { ok: true };
        } catch (error) {
          // Only the error's message: a check's error never carries a secret (connection strings
          // are not part of pg's or nats' messages), and the stack is no use to a probe.
          checks[name] = { ok: false, problem: (error as Error)?.message ?? String(error) };
        }
      }),
    );
    // No check yet means main() has not got as far as registering one (token-service registers
    // its checks only once NATS answers): that is starting, not ready. Before this, an empty
    // report read as ready, and Kubernetes sent traffic to a pod still waiting for NATS.
    return { ready: this.#checks.size > 0 && Object.values(checks).every((c) => c.ok), checks };
  }
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Ready while a round trip to the NATS server succeeds (false while reconnecting). */
export function natsCheck(nc: { flush(): Promise<void>; isClosed(): boolean }): ReadinessCheck {
  return async () => {
    if (nc.isClosed()) return false;
    await nc.flush();
    return true;
  };
}

/** Ready while PostgreSQL answers a trivial query. */
export function postgresCheck(pool: { query(sql: string): Promise<unknown> }): ReadinessCheck {
  return async () => {
    await pool.query("SELECT 1");
    return true;
  };
}
