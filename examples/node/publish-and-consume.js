// A minimal, correct h5pay intent publisher and result consumer (amqplib):
// publisher confirms, persistent, mandatory with a return handler, a
// message_id that stays the same on retry, correlation_id and reply_to,
// and a consumer that binds its routing keys and deduplicates on event_id.
import amqp from 'amqplib';

const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/%2f';
const mch = process.env.MCH_NO ?? 'EXAMPLE01';
const trace = process.env.PAY_TRACE_NO ?? `node-${Date.now()}`;

const conn = await amqp.connect(url);
const ch = await conn.createConfirmChannel();
let returned = false;
ch.on('return', (msg) => { returned = true; console.error(`returned: ${msg.fields.replyText}`); });

const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
for (const key of [`h5pay.result.*.${mch}`, `h5pay.payment.*.${mch}`]) {
  await ch.bindQueue(queue, 'h5pay.results', key);
}

const seen = new Set();
let duplicates = 0;
let result = null;
await ch.consume(queue, (msg) => {
  const event = JSON.parse(msg.content.toString('utf8'));
  ch.ack(msg);
  if (seen.has(event.event_id)) { duplicates += 1; return; } // at least once
  seen.add(event.event_id);
  if (event.schema === 'h5pay.result.v1' && event.pay_trace_no === trace) {
    if (msg.properties.correlationId !== `order-${trace}`) throw new Error('correlation_id');
    result = event;
  }
});

const body = Buffer.from(JSON.stringify({
  pay_trace_no: trace, mch_no: mch, pay_type: 'wechat', total_amount: 100,
  metadata: { order_id: `order-${trace}` },
}));
const options = {
  persistent: true, mandatory: true, contentType: 'application/json',
  messageId: trace,                 // the same on every retry of this intent
  correlationId: `order-${trace}`,
  replyTo: queue,
};
for (let attempt = 1; ; attempt += 1) {
  try {
    await new Promise((resolve, reject) => {
      ch.publish('h5pay.intents', 'h5pay.intent.example', body, options, (err) => (err ? reject(err) : resolve()));
    });
    break; // confirmed
  } catch (e) {
    if (attempt === 3) throw new Error(`the broker never confirmed the intent: ${e}`);
    await new Promise((r) => setTimeout(r, 1000 * attempt)); // same body, same messageId
  }
}
if (returned) { console.error('unroutable: is the worker topology declared?'); process.exit(1); }

const deadline = Date.now() + 30000;
while (!result && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
await new Promise((r) => setTimeout(r, 1000)); // the reply_to copy, deduplicated
await conn.close();
if (!result) { console.error(`no result event for ${trace}`); process.exit(1); }
console.log(`node: ${trace} -> ${result.status}, ${duplicates} duplicate(s) dropped`);
process.exit(result.status === 'ready' ? 0 : 1);
