/**
 * Whether a PostgreSQL error means "the database is not there right now" (stopped, restarting,
 * unreachable) rather than "this statement is wrong". Services wait out the first kind (the
 * archiver with the message in hand, every service at start before its migrations); the second
 * kind is a bug or bad data and is retried with backoff by the consumer like any other failure.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === "string" ? e.code : "";
  // Class 08: connection exceptions. 57P01 admin_shutdown, 57P02 crash_shutdown,
  // 57P03 cannot_connect_now ("the database system is starting up / shutting down").
  if (code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03") return true;
  if (["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"].includes(code)) return true;
  const message = typeof e?.message === "string" ? e.message : "";
  // node-postgres reports a dropped socket, a pool wait timeout and a query that got no answer
  // with these messages and no code.
  // "Query read timeout": the pool's query_timeout ran out with no answer at all.
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connection is closed|Query read timeout/i.test(message);
}

/**
 * Runs `query` until PostgreSQL answers it: errors that mean "the database is not there right
 * now" are waited out (capped backoff, 0.5 s doubling to 5 s, `onWait` told each time); any other
 * error is thrown at once. For a write that must happen once something irreversible has happened
 * (smtp-sender's "sent" after the server's 250): failing it would repeat the irreversible step.
 */
export async function untilDatabaseAnswers<T>(query: () => Promise<T>, onWait?: (error: unknown, attempt: number) => void): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await query();
    } catch (error) {
      if (!isDatabaseUnavailable(error)) throw error;
      onWait?.(error, attempt);
      await new Promise((r) => setTimeout(r, Math.min(5_000, 500 * 2 ** (attempt - 1))));
    }
  }
}
