// The reference for elves-cron-expr: Quartz 2.3.2's CronExpression (Debian libquartz2-java).
//
// Reads lines `expr \t zone \t startEpochMillis \t count` on stdin and writes one line per
// input line, in order:
//   OK t1 t2 …     the rule parses; up to `count` fire times (epoch ms), each strictly after
//                  the previous one (the first after start); fewer when Quartz returns null
//   REJECT reason  new CronExpression(expr) throws ParseException
//   ERROR reason   parsing passed but computing a fire time threw (Quartz accepts a few rules
//                  it cannot evaluate, such as `L` in the second field)
//
// Build and run:
//   javac -cp /usr/share/java/quartz2.jar -d OUT QuartzOracle.java
//   java -cp /usr/share/java/quartz2.jar:/usr/share/java/slf4j-api.jar:OUT QuartzOracle
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.text.ParseException;
import java.util.Date;
import java.util.TimeZone;

import org.quartz.CronExpression;

public final class QuartzOracle {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String[] f = line.split("\t", -1);
            if (f.length != 4) {
                throw new IllegalArgumentException("expected 4 tab-separated fields: " + line);
            }
            out.write(answer(f[0], f[1], Long.parseLong(f[2]), Integer.parseInt(f[3])));
            out.write('\n');
        }
        out.flush();
    }

    private static String answer(String expr, String zone, long start, int count) {
        CronExpression ce;
        try {
            ce = new CronExpression(expr);
        } catch (ParseException e) {
            return "REJECT " + oneLine(e.getMessage());
        }
        TimeZone tz = TimeZone.getTimeZone(zone);
        if (!tz.getID().equals(zone)) {
            throw new IllegalArgumentException("unknown zone " + zone);
        }
        ce.setTimeZone(tz);
        StringBuilder sb = new StringBuilder("OK");
        Date d = new Date(start);
        try {
            for (int i = 0; i < count; i++) {
                d = ce.getNextValidTimeAfter(d);
                if (d == null) {
                    break;
                }
                sb.append(' ').append(d.getTime());
            }
        } catch (RuntimeException e) {
            return "ERROR " + oneLine(e.toString());
        }
        return sb.toString();
    }

    private static String oneLine(String s) {
        return s == null ? "" : s.replace('\n', ' ').replace('\r', ' ');
    }
}
