#!/usr/bin/env node
import { consumerLagReader } from "@postroom/nats-kit";
import { runPostroomService } from "@postroom/runtime";
import { SmtpSender } from "./sender.js";

await runPostroomService({
  name: "smtp-sender",
  database: true,
  async start({ nc, names, config, pool, logger, env, telemetry }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    // Crash tests stop the process at a named point; nothing sets this in production.
    // after-accepted: the server's 250 is recorded, mail.sent and the ack not yet done.
    // before-recorded: the 250 is in the send receipt only (as when PostgreSQL is down).
    const failpoint = env.POSTROOM_FAILPOINT;
    const hold = async (commandId: string) => {
      logger.warn({ failpoint, commandId }, "failpoint reached; holding until killed");
      await new Promise<never>(() => undefined);
    };
    const afterAccepted = failpoint === "smtp-sender.after-accepted" ? hold : undefined;
    const beforeRecorded = failpoint === "smtp-sender.before-recorded" ? hold : undefined;
    // Interim until the config has a per-mailbox field: one Sent folder name for every IMAP
    // mailbox this process serves; unset means no copy (Exchange and Gmail file sent mail themselves).
    const sentFolderName = env.POSTROOM_SENT_FOLDER || undefined;
    const sender = new SmtpSender({
      nc,
      names,
      config,
      pool: pool!,
      logger,
      ...(tenant ? { tenant } : {}),
      ...(afterAccepted ? { afterAccepted } : {}),
      ...(beforeRecorded ? { beforeRecorded } : {}),
      ...(sentFolderName ? { sentFolder: () => sentFolderName } : {}),
    });
    await sender.start();
    telemetry.metrics.observeConsumers(consumerLagReader(nc, [{ stream: names.streams.sendCommands, durable: names.consumers.smtpSender(tenant) }]));
    return sender;
  },
});
