#!/usr/bin/env node
import { runPostroomService } from "@postroom/runtime";
import { Poller } from "./poller.js";

await runPostroomService({
  name: "imap-poller",
  async start({ nc, names, config, logger, tenants }) {
    const poller = new Poller({ nc, names, config, logger, ...(tenants ? { tenants } : {}) });
    await poller.start();
    return poller;
  },
});
