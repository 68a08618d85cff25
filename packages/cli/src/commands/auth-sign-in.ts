import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "@postroom/config";
import { MailboxAuthStatus, names as namesOf, SignInReply, type SignInRequest } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { EXIT_USAGE } from "../dispatch.js";
import { operatorNatsOptions } from "./nats-operator.js";
import { commandTarget } from "./run-state.js";

export const help = `Usage: postroom auth sign-in --config FILE --mailbox [TENANT/]ID [--timeout SECONDS]

Signs a delegated mailbox (auth.type: microsoft-delegated) in with the device-code flow: prints
a web address and a code, and waits while the mailbox's owner opens the address on any device,
enters the code and signs in with the mailbox's own account. Works over SSH with no browser on
the server.

The flow runs inside token-service, which keeps the refresh token, sealed (tokenStore), and is
the only process that ever sees it: this command only shows the code and waits for the mailbox's
auth state to say the sign-in is done. token-service must be running (postroom up, or the
cluster's). Run it again whenever postroom status says the mailbox needs a new sign-in
(password changed, access revoked).

Options:
  -c, --config FILE          the Postroom config file (default: $POSTROOM_CONFIG, then the running up/demo)
  -m, --mailbox [TENANT/]ID  the mailbox to sign in (TENANT/ when ids repeat across tenants)
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
  if (mailbox.auth.type !== "microsoft-delegated" && mailbox.smtp?.auth?.type !== "microsoft-delegated") {
    process.stderr.write(`postroom auth sign-in: mailbox ${tenant.id}/${mailbox.id} uses ${mailbox.auth.type} auth, which needs no sign-in\n  fix: set auth: { type: microsoft-delegated, clientId: <public client id> } to sign a person in\n`);
    return 1;
  }
  const names = namesOf(config.nats.namespace);
  let nc;
  try {
    nc = await connectNats(operatorNatsOptions(config, "postroom-auth-sign-in"));
  } catch (e) {
    process.stderr.write(`postroom auth sign-in: cannot reach NATS at ${config.nats.url}: ${(e as Error).message}\n  fix: start NATS (and token-service), or set NATS_URL\n`);
    return 1;
  }
  try {
    const request: SignInRequest = { version: "v1", tenant: tenant.id, mailbox: mailbox.id };
    let reply: SignInReply | undefined;
    // token-service may be starting (no responders yet): ask again for half a minute.
    const askUntil = Date.now() + 30_000;
    let problem = "";
    while (reply === undefined && Date.now() < askUntil) {
      try {
        const msg = await nc.request(names.subjects.signIn(tenant.id, mailbox.id), JSON.stringify(request), { timeout: 15_000 });
        reply = SignInReply.parse(JSON.parse(new TextDecoder().decode(msg.data)));
      } catch (e) {
        problem = (e as Error).message;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    if (reply === undefined) {
      process.stderr.write(`postroom auth sign-in: token-service did not answer (${problem})\n  fix: start token-service (postroom up), then run this again\n`);
      return 1;
    }
    if ("error" in reply) {
      process.stderr.write(`postroom auth sign-in: ${reply.error.message}${reply.error.code ? ` (${reply.error.code})` : ""}\n${reply.error.fix ? `  fix: ${reply.error.fix}\n` : ""}`);
      return 1;
    }
    out.write(`Sign in ${mailbox.address} (mailbox ${tenant.id}/${mailbox.id}):\n\n  open   ${reply.verificationUri}\n  code   ${reply.userCode}\n\n${reply.message}\nWaiting until ${reply.expiresAt} …\n`);
    const deadline = Math.min(Date.parse(reply.expiresAt), values.timeout ? Date.now() + Number(values.timeout) * 1000 : Infinity);
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
