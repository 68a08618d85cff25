#!/usr/bin/env node
import { runPostroomService } from "@postroom/runtime";
import { SmtpSender } from "./sender.js";

await runPostroomService({
  name: "smtp-sender",
  database: true,
  async start({ nc, names, config, pool, logger, env }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    const sender = new SmtpSender({ nc, names, config, pool: pool!, logger, ...(tenant ? { tenant } : {}) });
    await sender.start();
    return sender;
  },
});
