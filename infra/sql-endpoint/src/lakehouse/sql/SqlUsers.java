package lakehouse.sql;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.spec.KeySpec;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;

/**
 * The SQL endpoint's users: one line per user, tab-separated: name, tenant ("*" = every tenant), PBKDF2
 * iterations, salt (hex), PBKDF2-HMAC-SHA256 of the password (hex). Written by
 * {@code python -m pipelines serve sql-user add}; the path comes from LAKEHOUSE_SQL_USERS_FILE. The file is
 * re-read when it changes, so users added or removed take effect on their next login or query.
 */
public final class SqlUsers {
    public static final String ALL_TENANTS = "*";

    record User(String name, String tenant, int iterations, byte[] salt, byte[] hash) {}

    private static Map<String, User> users = Map.of();
    private static long loadedStamp = Long.MIN_VALUE;

    private SqlUsers() {}

    static synchronized Map<String, User> users() {
        String location = System.getenv("LAKEHOUSE_SQL_USERS_FILE");
        if (location == null || location.isEmpty()) {
            throw new IllegalStateException("LAKEHOUSE_SQL_USERS_FILE is not set: the SQL endpoint has no users");
        }
        Path path = Paths.get(location);
        try {
            long stamp = Files.exists(path) ? Files.getLastModifiedTime(path).toMillis() ^ Files.size(path) : -1;
            if (stamp != loadedStamp) {
                Map<String, User> loaded = new HashMap<>();
                if (stamp != -1) {
                    List<String> lines = Files.readAllLines(path, StandardCharsets.UTF_8);
                    for (String line : lines) {
                        if (line.isBlank() || line.startsWith("#")) {
                            continue;
                        }
                        String[] f = line.split("\t");
                        HexFormat hex = HexFormat.of();
                        loaded.put(f[0], new User(f[0], f[1], Integer.parseInt(f[2]), hex.parseHex(f[3]), hex.parseHex(f[4])));
                    }
                }
                users = Map.copyOf(loaded);
                loadedStamp = stamp;
            }
        } catch (IOException | RuntimeException e) {
            throw new IllegalStateException(location + ": cannot read the SQL endpoint's users: " + e, e);
        }
        return users;
    }

    /** Whether {@code password} is the user's; a wrong password and an unknown user look the same. */
    static boolean verify(String name, String password) {
        User user = users().get(name);
        if (user == null || password == null) {
            return false;
        }
        try {
            KeySpec spec = new PBEKeySpec(password.toCharArray(), user.salt(), user.iterations(), 256);
            byte[] hash = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
            return MessageDigest.isEqual(hash, user.hash());
        } catch (Exception e) {
            return false;
        }
    }

    /** The tenant a user may read, ALL_TENANTS, or null for a name the file does not hold. */
    static String tenantOf(String name) {
        User user = users().get(name);
        return user == null ? null : user.tenant();
    }
}
