// Send orchestrator.submit with celery-node's defaults (its default queue, "celery"),
// as another team's Node.js service would: node submit.js REDIS_URL KWARGS_JSON
"use strict";
const celery = require("celery-node");

const [url, kwargs] = process.argv.slice(2);
const client = celery.createClient(url, url);
const task = client.createTask("orchestrator.submit");
const result = task.applyAsync([], JSON.parse(kwargs));
result.get(30000).then(
  (value) => {
    console.log(JSON.stringify(value));
    client.disconnect().then(() => process.exit(0));
  },
  (err) => {
    console.error(`submit failed: ${err}`);
    client.disconnect().then(() => process.exit(1));
  },
);
