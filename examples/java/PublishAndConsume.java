// A minimal, correct h5pay intent publisher and result consumer (the
// RabbitMQ Java client): publisher confirms, persistent, mandatory with a
// return listener, a message_id that stays the same on retry,
// correlation_id and reply_to, and a consumer that binds its routing keys
// and deduplicates on event_id. JSON is read with a regular expression to
// keep the example free of other libraries; use Jackson in real code.
import com.rabbitmq.client.*;

import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class PublishAndConsume {
    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\":\"([^\"]*)\"").matcher(json);
        return m.find() ? m.group(1) : null;
    }

    public static void main(String[] args) throws Exception {
        String url = env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        String mch = env("MCH_NO", "EXAMPLE01");
        String trace = env("PAY_TRACE_NO", "java-" + System.currentTimeMillis());

        ConnectionFactory factory = new ConnectionFactory();
        factory.setUri(url);
        try (Connection conn = factory.newConnection(); Channel ch = conn.createChannel()) {
            ch.confirmSelect();
            AtomicBoolean returned = new AtomicBoolean(false);
            ch.addReturnListener((code, text, exchange, key, props, body) -> returned.set(true));

            String queue = ch.queueDeclare("", false, true, true, null).getQueue();
            ch.queueBind(queue, "h5pay.results", "h5pay.result.*." + mch);
            ch.queueBind(queue, "h5pay.results", "h5pay.payment.*." + mch);

            String body = "{\"pay_trace_no\":\"" + trace + "\",\"mch_no\":\"" + mch
                + "\",\"pay_type\":\"wechat\",\"total_amount\":100,\"metadata\":{\"order_id\":\"order-" + trace + "\"}}";
            AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                .contentType("application/json")
                .deliveryMode(2)                 // persistent
                .messageId(trace)                // the same on every retry of this intent
                .correlationId("order-" + trace)
                .replyTo(queue)
                .build();
            boolean confirmed = false;
            for (int attempt = 1; attempt <= 3 && !confirmed; attempt++) {
                ch.basicPublish("h5pay.intents", "h5pay.intent.example", true, props, body.getBytes(StandardCharsets.UTF_8));
                try {
                    ch.waitForConfirmsOrDie(10_000);
                    confirmed = true;
                } catch (Exception e) {
                    Thread.sleep(1000L * attempt); // same body, same messageId
                }
            }
            if (!confirmed) throw new IllegalStateException("the broker never confirmed the intent");
            if (returned.get()) throw new IllegalStateException("unroutable: is the worker topology declared?");

            Set<String> seen = new HashSet<>();
            int duplicates = 0;
            String status = null;
            long deadline = System.currentTimeMillis() + 30_000;
            long settle = Long.MAX_VALUE;
            while (System.currentTimeMillis() < Math.min(deadline, settle)) {
                GetResponse r = ch.basicGet(queue, false);
                if (r == null) { Thread.sleep(50); continue; }
                ch.basicAck(r.getEnvelope().getDeliveryTag(), false);
                String event = new String(r.getBody(), StandardCharsets.UTF_8);
                String id = field(event, "event_id");
                if (!seen.add(id)) { duplicates++; continue; } // at least once
                if ("h5pay.result.v1".equals(field(event, "schema")) && trace.equals(field(event, "pay_trace_no"))) {
                    if (!("order-" + trace).equals(r.getProps().getCorrelationId())) throw new IllegalStateException("correlation_id");
                    status = field(event, "status");
                    settle = System.currentTimeMillis() + 1000; // the reply_to copy, deduplicated
                }
            }
            if (status == null) throw new IllegalStateException("no result event for " + trace);
            System.out.println("java: " + trace + " -> " + status + ", " + duplicates + " duplicate(s) dropped");
            if (!"ready".equals(status)) System.exit(1);
        }
    }
}
