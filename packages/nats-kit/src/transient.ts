/**
 * Whether a JetStream API or publish failure is one that passes by itself: a request that timed out,
 * no server answering the subject (JetStream not reachable yet, reported by nats.js as "no
 * responders" / "jetstream is not enabled"), or a cluster between leaders (API code 10008
 * "JetStream system temporarily unavailable", "no suitable peers" while a node restarts, a
 * stream's leader not yet elected). A three-node cluster shows all of these for a few seconds
 * whenever a node dies; a single server shows the first two while it restarts. Anything else (a
 * bad configuration, a permission refused, insufficient resources) is not retried.
 */
export function isTransientJetStreamError(error: unknown): boolean {
  const e = error as { name?: string; message?: string; code?: string | number; api_error?: { err_code?: number } } | undefined;
  if (e?.name === "TimeoutError" || e?.name === "JetStreamNotEnabled" || e?.name === "NoRespondersError") return true;
  if (e?.code === "503" || e?.code === "TIMEOUT" || e?.api_error?.err_code === 10008) return true;
  const text = String(e?.message ?? error);
  return /\btimeout\b|no responders|jetstream is not enabled|temporarily unavailable|no suitable peers|leader not|not current|cluster not available/i.test(text);
}

/**
 * Runs `attempt` until it succeeds or fails with a non-transient error, waiting between tries with
 * capped exponential backoff and jitter (0.25 s doubling to 5 s). A service starting while NATS
 * elects a leader waits for the election instead of exiting. `deadlineMs` (default 5 minutes)
 * bounds the wait, so a server that never comes back still surfaces as a start-up failure.
 */
export async function retryTransient<T>(attempt: () => Promise<T>, options: { deadlineMs?: number; onRetry?: (error: unknown, delayMs: number) => void } = {}): Promise<T> {
  const deadline = Date.now() + (options.deadlineMs ?? 5 * 60_000);
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (!isTransientJetStreamError(error) || Date.now() >= deadline) throw error;
      const cap = Math.min(5_000, 250 * 2 ** n);
      const delay = cap / 2 + Math.random() * (cap / 2);
      options.onRetry?.(error, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
