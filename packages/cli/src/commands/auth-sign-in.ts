import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "@postroom/config";
import { MailboxAuthStatus, names as namesOf, SignInReply, type Names, type SignInCode, type SignInRequest } from "@postroom/contracts";
import type { NatsConnection } from "@postroom/nats-kit";
import { connectNats, openKv } from "@postroom/nats-kit";
import { EXIT_USAGE } from "../dispatch.js";
import { operatorNatsOptions } from "./nats-operator.js";
import { commandTarget } from "./run-state.js";

export const help = `Usage: postroom auth sign-in --config FILE --mailbox [TENANT/]ID [--timeout SECONDS]

Signs a delegated mailbox in. Microsoft (auth.type: microsoft-delegated): the device-code flow
prints a web address and a code, and waits while the mailbox's owner opens the address on any
device, enters the code and signs in with the mailbox's own account; works over SSH with no
browser on the server. Google (auth.type: google-delegated): Google's device flow does not grant
the Gmail scope, so this command listens on a loopback port, prints a Google sign-in address, and
waits for the browser to come back to it (over SSH: forward that port, as printed). --browser
signs a Microsoft mailbox in the same way, where a browser is at hand.

The flow runs inside token-service, which keeps the refresh token, sealed (tokenStore), and is
the only process that ever sees it: this command only shows the code and waits for the mailbox's
auth state to say the sign-in is done. token-service must be running (postroom up, or the
cluster's). Run it again whenever postroom status says the mailbox needs a new sign-in
(password changed, access revoked).

Options:
  -c, --config FILE          the Postroom config file (default: $POSTROOM_CONFIG, then the running up/demo)
  -m, --mailbox [TENANT/]ID  the mailbox to sign in (TENANT/ when ids repeat across tenants)
      --browser              Microsoft: sign in through a browser instead of a device code
      --port PORT            the loopback port a browser sign-in comes back to (default: any free one)
      --timeout SECONDS      give up waiting after this long (default: until the code expires)
  -h, --help                 show this help

Exit codes: 0 signed in, 1 the sign-in failed or timed out, 2 usage error.
`;

export async function run(argv: string[], env: NodeJS.ProcessEnv = process.env, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        config: { type: "string", short: "c" },
        mailbox: { type: "string", short: "m" },
        timeout: { type: "string" },
        port: { type: "string" },
        browser: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    process.stderr.write(`postroom auth sign-in: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  if (values.help) {
    out.write(help);
    return 0;
  }
  const usage = (problem: string) => {
    process.stderr.write(`postroom auth sign-in: ${problem}\n\n${help}`);
    return EXIT_USAGE;
  };
  if (!values.mailbox) return usage("give --mailbox ID");
  const target = commandTarget(values.config, env);
  if (target.config === undefined) return usage("no configuration: pass --config FILE or set POSTROOM_CONFIG");
  let config;
  try {
    config = await loadConfig(target.env, target.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`postroom auth sign-in: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
  const [tenantPart, idPart] = values.mailbox.includes("/") ? values.mailbox.split("/", 2) : [undefined, values.mailbox];
  const matches = config.tenants.flatMap((t) => t.mailboxes.filter((m) => m.id === idPart && (tenantPart === undefined || t.id === tenantPart)).map((m) => ({ tenant: t, mailbox: m })));
  if (matches.length !== 1) return usage(matches.length === 0 ? `no mailbox "${values.mailbox}" in ${target.config}` : `mailbox "${idPart}" exists in several tenants: give TENANT/${idPart}`);
  const { tenant, mailbox } = matches[0]!;
  const delegated = [mailbox.auth.type, mailbox.smtp?.auth?.type].find((t) => t === "microsoft-delegated" || t === "google-delegated");
  if (delegated === undefined) {
    process.stderr.write(`postroom auth sign-in: mailbox ${tenant.id}/${mailbox.id} uses ${mailbox.auth.type} auth, which needs no sign-in\n  fix: set auth: { type: microsoft-delegated, clientId: <public client id> } (or google-delegated) to sign a person in\n`);
    return 1;
  }
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return usage("--port must be a port number");
  const names = namesOf(config.nats.namespace);
  let nc;
  try {
    nc = await connectNats(operatorNatsOptions(config, "postroom-auth-sign-in"));
  } catch (e) {
    process.stderr.write(`postroom auth sign-in: cannot reach NATS at ${config.nats.url}: ${(e as Error).message}\n  fix: start NATS (and token-service), or set NATS_URL\n`);
    return 1;
  }
  try {
    const timeoutAt = values.timeout ? Date.now() + Number(values.timeout) * 1000 : Infinity;
    if (delegated === "google-delegated" || values.browser) return await browserSignIn({ nc, names, tenant: tenant.id, mailbox: mailbox.id, address: mailbox.address, port, timeoutAt, out });
    const reply = await ask(nc, names.subjects.signIn(tenant.id, mailbox.id), { version: "v1", tenant: tenant.id, mailbox: mailbox.id });
    if (typeof reply === "string") return silent(reply);
    if ("error" in reply) return refused(reply.error);
    if (!("userCode" in reply)) {
      process.stderr.write("postroom auth sign-in: token-service did not answer with a device code\n  fix: upgrade token-service to this version\n");
      return 1;
    }
    out.write(`Sign in ${mailbox.address} (mailbox ${tenant.id}/${mailbox.id}):\n\n  open   ${reply.verificationUri}\n  code   ${reply.userCode}\n\n${reply.message}\nWaiting until ${reply.expiresAt} …\n`);
    const deadline = Math.min(Date.parse(reply.expiresAt), timeoutAt);
    // The outcome is token-service's auth state of the mailbox; polled, because a person takes
    // seconds to minutes and a watch would add nothing but a consumer.
    const kv = await openKv(nc, names.buckets.mailboxStatus, { replicas: config.nats.replicas });
    while (Date.now() < deadline) {
      const entry = await kv.get(names.mailboxAuthKey(tenant.id, mailbox.id));
      const parsed = entry?.value.length ? MailboxAuthStatus.safeParse(entry.json()) : undefined;
      const signIn = parsed?.success ? parsed.data.signIn : undefined;
      if (signIn?.id === reply.signInId && signIn.state === "done") {
        out.write(`Done: ${signIn.message ?? "signed in"}. token-service keeps the grant, sealed; nothing more to do.\n`);
        return 0;
      }
      if (signIn?.id === reply.signInId && signIn.state === "failed") {
        process.stderr.write(`postroom auth sign-in: the sign-in failed: ${signIn.message ?? "no reason given"}\n  fix: run this command again and sign in with the mailbox's own account\n`);
        return 1;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    process.stderr.write("postroom auth sign-in: nobody signed in before the code expired\n  fix: run this command again and enter the code within its lifetime\n");
    return 1;
  } finally {
    await nc.close();
  }
}

function refused(error: { message: string; code: string | null; fix: string | null }): number {
  process.stderr.write(`postroom auth sign-in: ${error.message}${error.code ? ` (${error.code})` : ""}\n${error.fix ? `  fix: ${error.fix}\n` : ""}`);
  return 1;
}

/** token-service gave no answer within `ask`'s half minute. */
function silent(problem: string): number {
  process.stderr.write(`postroom auth sign-in: token-service did not answer (${problem})\n  fix: start token-service (postroom up), then run this again\n`);
  return 1;
}

/** Asks token-service, retrying while it is starting (no responders yet) for half a minute. */
async function ask(nc: NatsConnection, subject: string, body: SignInRequest | SignInCode): Promise<SignInReply | string> {
  const askUntil = Date.now() + 30_000;
  let problem = "";
  while (Date.now() < askUntil) {
    try {
      const msg = await nc.request(subject, JSON.stringify(body), { timeout: 15_000 });
      return SignInReply.parse(JSON.parse(new TextDecoder().decode(msg.data)));
    } catch (e) {
      problem = (e as Error).message;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  return problem;
}

/** What the browser brought back to the loopback address. */
type Redirect = { code: string; state: string; respond: (ok: boolean, text: string) => void } | { error: string; respond: (ok: boolean, text: string) => void };

/**
 * The authorization-code sign-in (Google, or Microsoft with --browser): a loopback listener for the redirect, the address to
 * open from token-service, then the code handed back to token-service, which alone can redeem it
 * (it keeps the PKCE verifier and the client secret).
 */
async function browserSignIn(o: { nc: NatsConnection; names: Names; tenant: string; mailbox: string; address: string; port: number; timeoutAt: number; out: NodeJS.WritableStream }): Promise<number> {
  let arrived!: (r: Redirect) => void;
  const redirected = new Promise<Redirect>((resolve) => (arrived = resolve));
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const code = url.searchParams.get("code");
    const state = url.searchParams.get("state");
    const error = url.searchParams.get("error");
    if (code === null && error === null) {
      res.writeHead(404).end();
      return;
    }
    const respond = (ok: boolean, text: string) => {
      res.writeHead(ok ? 200 : 400, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end(`${text}\n`);
    };
    arrived(code !== null ? { code, state: state ?? "", respond } : { error: error ?? "unknown", respond });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, "127.0.0.1", () => resolve());
  });
  try {
    const { port } = server.address() as AddressInfo;
    const subject = o.names.subjects.signIn(o.tenant, o.mailbox);
    const started = await ask(o.nc, subject, { version: "v1", tenant: o.tenant, mailbox: o.mailbox, flow: "browser", redirectUri: `http://127.0.0.1:${port}/` });
    if (typeof started === "string") return silent(started);
    if ("error" in started) return refused(started.error);
    if (!("authorizationUrl" in started)) {
      process.stderr.write("postroom auth sign-in: token-service did not answer with a sign-in address\n  fix: upgrade token-service to this version\n");
      return 1;
    }
    o.out.write(
      `Sign in ${o.address} (mailbox ${o.tenant}/${o.mailbox}) with its own account:\n\n  open   ${started.authorizationUrl}\n\n` +
        `The browser comes back to http://127.0.0.1:${port}/ on this machine. Signing in from another\n` +
        `machine? Forward the port first: ssh -L ${port}:127.0.0.1:${port} <this server>\nWaiting until ${started.expiresAt} …\n`,
    );
    const deadline = Math.min(Date.parse(started.expiresAt), o.timeoutAt);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), Math.max(0, deadline - Date.now()))));
    const back = await Promise.race([redirected, late]).finally(() => clearTimeout(timer));
    if (back === "late") {
      process.stderr.write("postroom auth sign-in: nobody signed in before the sign-in expired\n  fix: run this command again and finish the sign-in in the browser within its lifetime\n");
      return 1;
    }
    if ("error" in back) {
      back.respond(false, `Sign-in refused (${back.error}). Nothing was stored; run postroom auth sign-in again.`);
      process.stderr.write(`postroom auth sign-in: the identity platform refused the sign-in (${back.error})\n  fix: run this command again and allow Postroom access to the mailbox\n`);
      return 1;
    }
    const done = await ask(o.nc, subject, { version: "v1", tenant: o.tenant, mailbox: o.mailbox, signInId: started.signInId, state: back.state, code: back.code });
    if (typeof done === "string" || "error" in done || !("account" in done)) {
      back.respond(false, "The sign-in did not finish: see the terminal running postroom auth sign-in.");
      if (typeof done === "string") {
        process.stderr.write(`postroom auth sign-in: token-service did not answer (${done})\n  fix: run this command again\n`);
        return 1;
      }
      if ("error" in done) return refused(done.error);
      process.stderr.write("postroom auth sign-in: token-service did not confirm the sign-in\n  fix: run this command again\n");
      return 1;
    }
    back.respond(true, `Signed in as ${done.account}. Postroom keeps the grant; you can close this tab.`);
    o.out.write(`Done: signed in as ${done.account}. token-service keeps the grant, sealed; nothing more to do.\n`);
    return 0;
  } finally {
    // The browser's answer is written by now; idle keep-alive sockets must not hold the exit up.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await closed;
  }
}
