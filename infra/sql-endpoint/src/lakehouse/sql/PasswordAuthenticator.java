package lakehouse.sql;

import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/** HiveServer2 CUSTOM authentication against the users file (see SqlUsers). */
public final class PasswordAuthenticator implements PasswdAuthenticationProvider {
    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        if (!SqlUsers.verify(user, password)) {
            throw new AuthenticationException("wrong user name or password");
        }
    }
}
