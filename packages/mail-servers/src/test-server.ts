/**
 * The lifecycle every test server in this package shares, so a test (or an end-to-end suite) can
 * start several and stop them in reverse order without knowing what they are.
 *
 * To add a server: write a class implementing `TestServer<YourInfo>` whose `start()` picks free
 * loopback ports, starts the real thing, waits until it answers and returns connection info; whose
 * `stop()` really ends it and removes its files; plus a `startYourServer(options)` function that
 * constructs and starts it. See README.md.
 */
export interface TestServer<Info> {
  /** Short name for messages ("dovecot", "smtp-sink"). */
  readonly name: string;
  /** Starts the server and resolves once it accepts connections; returns how to reach it. */
  start(): Promise<Info>;
  /** Stops the server and removes its files; safe to call twice or after a failed start. */
  stop(): Promise<void>;
}

/**
 * Stops servers in the reverse order of the array (the last started depends on the earlier ones)
 * and reports every failure, not only the first.
 */
export async function stopAll(servers: ReadonlyArray<Pick<TestServer<unknown>, "name" | "stop"> | undefined>): Promise<void> {
  const errors: unknown[] = [];
  for (const server of [...servers].reverse()) {
    if (server === undefined) continue;
    try {
      await server.stop();
    } catch (error) {
      errors.push(new Error(`stopping ${server.name} failed`, { cause: error }));
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, `${errors.length} test server(s) failed to stop`);
}
