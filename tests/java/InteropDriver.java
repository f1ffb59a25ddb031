import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.http.websocketx.CloseWebSocketFrame;
import io.netty.handler.codec.http.websocketx.WebSocketClientProtocolHandler;
import net.easecation.easechat.api.Logger;
import net.easecation.easechat.api.message.AutoSubChannelMessage;
import net.easecation.easechat.api.message.ChannelMessage;
import net.easecation.easechat.api.message.DisconnectMessage;
import net.easecation.easechat.api.message.TransmitMessage;
import net.easecation.easechat.network.EaseChatClient;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URI;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Drives the production EaseChat Java client for tests/java_client.rs.
 *
 * Commands arrive one per line on standard input: a verb, a client id and
 * arguments, each URL-encoded (UTF-8) and separated by one space. Every
 * command is answered with `done VERB ID` or `fail VERB ID CLASS MESSAGE`.
 * Events the clients see are printed as they happen:
 *   recv ID SENDER CHANNEL TEXT     a 1r through the client's listener
 *   closeframe ID CODE REASON       the close frame the nexus sent
 *   closed ID                       the connection is gone
 *   error ID CLASS MESSAGE          an exception the client's pipeline raised
 *   log ID LEVEL MESSAGE            the client's own log lines
 * Everything on standard output uses this format, URL-encoded, so the test
 * can assert on it; the driver adds no protocol logic of its own.
 */
public final class InteropDriver {
    private static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    private static final Map<String, EaseChatClient> CLIENTS = new HashMap<>();
    private static final Map<String, AutoSubChannelMessage> AUTO = new HashMap<>();

    private static String enc(Object value) {
        return URLEncoder.encode(String.valueOf(value), StandardCharsets.UTF_8);
    }

    private static String dec(String value) {
        return URLDecoder.decode(value, StandardCharsets.UTF_8);
    }

    /** Prints one event line; fields are URL-encoded. */
    static synchronized void emit(String verb, Object... fields) {
        StringBuilder line = new StringBuilder(verb);
        for (Object field : fields) {
            line.append(' ').append(enc(field));
        }
        OUT.println(line);
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        emit("started");
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) continue;
            String[] raw = line.split(" ", -1);
            String[] a = new String[raw.length];
            for (int i = 0; i < raw.length; i++) a[i] = dec(raw[i]);
            String verb = a[0];
            String id = a.length > 1 ? a[1] : "";
            if (verb.equals("quit")) break;
            try {
                run(verb, id, a);
                emit("done", verb, id);
            } catch (Throwable t) {
                emit("fail", verb, id, t.getClass().getName(), String.valueOf(t.getMessage()));
            }
        }
        emit("bye");
        System.exit(0);
    }

    private static void run(String verb, String id, String[] a) throws Exception {
        switch (verb) {
            case "open": open(id, a[2], a[3]); break;
            case "autosub": {
                AutoSubChannelMessage message = new AutoSubChannelMessage(a[2], Integer.parseInt(a[3]));
                AUTO.put(id + "\n" + a[2], message);
                check(sender(id).sendSyncChannelMessage(message));
                break;
            }
            case "sub":
                check(sender(id).sendSyncChannelMessage(new ChannelMessage(a[2], Integer.parseInt(a[3]))));
                break;
            case "stopauto": {
                // The API's way to end an auto-renewed subscription.
                AUTO.get(id + "\n" + a[2]).setCloseAutoSub(true);
                break;
            }
            case "pub":
                check(sender(id).sendSyncTransmitMessage(new TransmitMessage(a[2], a[3])));
                break;
            case "disconnect":
                check(sender(id).sendSyncMessage(new DisconnectMessage(a[2])));
                if (!sender(id).getChannel().closeFuture().await(5, TimeUnit.SECONDS)) {
                    throw new IllegalStateException("the nexus did not close after 1d");
                }
                break;
            case "shutdown":
                // Reported, not checked: it returns whether the event loop had
                // already terminated, which it has not yet when it returns.
                emit("shutdown", id, client(id).shutdown());
                break;
            case "active":
                emit("active", id, client(id).isActive());
                break;
            default:
                throw new IllegalArgumentException("unknown command " + verb);
        }
    }

    private static void check(boolean ok) {
        if (!ok) throw new IllegalStateException("the client reported failure");
    }

    private static EaseChatClient client(String id) {
        EaseChatClient client = CLIENTS.get(id);
        if (client == null) throw new IllegalArgumentException("no client " + id);
        return client;
    }

    private static net.easecation.easechat.api.MessageSender sender(String id) {
        return client(id).getSender();
    }

    /** Starts a client and waits until it has sent its 1h. */
    private static void open(String id, String name, String url) throws Exception {
        EaseChatClient client = new EaseChatClient(name, URI.create(url),
                message -> emit("recv", id, message.getForm(), message.getChannelName(), message.getText()));
        client.setLogger(new EventLogger(id));
        client.start();
        CLIENTS.put(id, client);
        Channel channel = client.getSender().getChannel();
        ChannelPipeline pipeline = channel.pipeline();
        // Observers only: the close frame passes on unchanged, exceptions are
        // reported where Netty would otherwise log them at the pipeline's tail.
        String protocol = pipeline.context(WebSocketClientProtocolHandler.class).name();
        pipeline.addBefore(protocol, "interop-close-observer", new ChannelInboundHandlerAdapter() {
            @Override
            public void channelRead(ChannelHandlerContext ctx, Object msg) {
                if (msg instanceof CloseWebSocketFrame) {
                    CloseWebSocketFrame frame = (CloseWebSocketFrame) msg;
                    emit("closeframe", id, frame.statusCode(), frame.reasonText());
                }
                ctx.fireChannelRead(msg);
            }
        });
        pipeline.addLast("interop-error-observer", new ChannelInboundHandlerAdapter() {
            @Override
            public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
                Throwable root = cause.getCause() != null ? cause.getCause() : cause;
                emit("error", id, root.getClass().getName(), String.valueOf(root.getMessage()));
            }
        });
        channel.closeFuture().addListener(f -> emit("closed", id));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!client.isHandshake()) {
            if (System.nanoTime() > deadline) throw new IllegalStateException("no 1h within 10 s");
            Thread.sleep(5);
        }
    }

    /** The client's log lines as events, so they never mix with the protocol. */
    private static final class EventLogger implements Logger {
        private final String id;

        EventLogger(String id) {
            this.id = id;
        }

        public void emergency(String m) { emit("log", id, "emergency", m); }
        public void alert(String m) { emit("log", id, "alert", m); }
        public void critical(String m) { emit("log", id, "critical", m); }
        public void error(String m) { emit("log", id, "error", m); }
        public void warning(String m) { emit("log", id, "warning", m); }
        public void notice(String m) { emit("log", id, "notice", m); }
        public void info(String m) { emit("log", id, "info", m); }
        public void debug(String m) { emit("log", id, "debug", m); }
    }
}
