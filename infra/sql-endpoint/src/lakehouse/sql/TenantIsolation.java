package lakehouse.sql;

import java.io.IOException;
import java.util.Set;
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.catalog.HiveTableRelation;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.EqualTo;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.types.DataTypes;
import scala.Function1;
import scala.runtime.AbstractPartialFunction;
import scala.runtime.BoxedUnit;

/**
 * Row-level tenant isolation for the SQL endpoint, enforced by the engine rather than by the client's SQL.
 *
 * <p>Queries of a JDBC session run as its login user (HiveServer2 impersonation, {@code
 * hive.server2.enable.doAs}). For a user the users file binds to one tenant, every catalog table a query reads -
 * in the FROM clause, a join, a subquery or a view - must be in {@code gold} or {@code silver} and have a
 * {@code tenant_id} column, and is read through {@code tenant_id = '<tenant>'}; any other table is refused.
 * Commands are refused except read-only metadata ones (SHOW, DESCRIBE, SET, USE), so a tenant login cannot
 * write, drop, cache or create anything. Operators (tenant "*") and the server itself are not restricted.
 * Path-based reads ({@code delta.`/path`}) are off in the endpoint ({@code spark.sql.runSQLOnFiles=false}).
 */
public final class TenantIsolation implements Function1<SparkSessionExtensions, BoxedUnit> {
    static final Set<String> SERVED_DATABASES = Set.of("gold", "silver");
    static final Set<String> READ_ONLY_COMMANDS = Set.of(
            "SetCommand", "ResetCommand", "SetCatalogAndNamespace", "SetNamespaceCommand", "ShowTables",
            "ShowTablesCommand", "ShowTablesExtended", "ShowNamespaces", "ShowCatalogs", "ShowColumns",
            "ShowColumnsCommand", "ShowFunctions", "ShowTableProperties", "ShowTablePropertiesCommand",
            "ShowPartitions", "ShowPartitionsCommand", "DescribeRelation", "DescribeTableCommand", "DescribeColumn",
            "DescribeColumnCommand", "DescribeNamespace", "DescribeFunction", "DescribeQueryCommand",
            "ShowCurrentNamespaceCommand", "ShowViews", "ShowCreateTable", "ShowCreateTableCommand");

    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectPostHocResolutionRule(session -> new RowFilter());
        extensions.injectCheckRule(session -> plan -> {
            checkCommands(plan);
            return BoxedUnit.UNIT;
        });
        return BoxedUnit.UNIT;
    }

    /** The tenant the current user is bound to; null when unrestricted (an operator, or the server itself). */
    static String restrictedTenant() {
        String user;
        try {
            user = UserGroupInformation.getCurrentUser().getShortUserName();
        } catch (IOException e) {
            throw new SecurityException("cannot tell who runs this query: " + e);
        }
        String tenant = SqlUsers.tenantOf(user);
        return tenant == null || tenant.equals(SqlUsers.ALL_TENANTS) ? null : tenant;
    }

    static void checkCommands(LogicalPlan plan) {
        String tenant = restrictedTenant();
        if (tenant == null) {
            return;
        }
        plan.foreach(node -> {
            String name = node.getClass().getSimpleName();
            if (node instanceof Command && !READ_ONLY_COMMANDS.contains(name)) {
                throw new SecurityException("tenant logins are read-only: " + name + " is not allowed");
            }
            if (node instanceof SetCommand set && set.kv().isDefined() && set.kv().get()._2().isDefined()) {
                throw new SecurityException("tenant logins cannot change settings (SET " + set.kv().get()._1() + ")");
            }
            return BoxedUnit.UNIT;
        });
    }

    /** "database.table" of a catalog table a leaf reads, or null for a leaf that is not a catalog table. */
    static String catalogName(LogicalPlan leaf) {
        if (leaf instanceof LogicalRelation relation && relation.catalogTable().isDefined()) {
            var id = relation.catalogTable().get().identifier();
            return id.database().getOrElse(() -> "default") + "." + id.table();
        }
        if (leaf instanceof DataSourceV2Relation relation && relation.identifier().isDefined()) {
            var id = relation.identifier().get();
            return String.join(".", id.namespace()) + "." + id.name();
        }
        if (leaf instanceof HiveTableRelation relation) {
            var id = relation.tableMeta().identifier();
            return id.database().getOrElse(() -> "default") + "." + id.table();
        }
        return null;
    }

    static final class RowFilter extends Rule<LogicalPlan> {
        @Override
        public LogicalPlan apply(LogicalPlan plan) {
            String tenant = restrictedTenant();
            if (tenant == null || plan instanceof Command) {
                return plan; // commands: checkCommands decides
            }
            return plan.transformUpWithSubqueries(new AbstractPartialFunction<LogicalPlan, LogicalPlan>() {
                @Override
                public boolean isDefinedAt(LogicalPlan node) {
                    return node instanceof LogicalRelation || node instanceof DataSourceV2Relation
                            || node instanceof HiveTableRelation;
                }

                @Override
                public LogicalPlan apply(LogicalPlan leaf) {
                    Attribute column = null;
                    for (Attribute attribute : scala.jdk.javaapi.CollectionConverters.asJava(leaf.output())) {
                        if (attribute.name().equalsIgnoreCase("tenant_id")) {
                            column = attribute;
                        }
                    }
                    String name = catalogName(leaf);
                    if (name == null) {
                        if (column != null) { // tenant data outside the catalog's names: a path-based read
                            throw new SecurityException("tenant logins read tables by name (gold.*, silver.*)");
                        }
                        return leaf; // Delta's own reads of a table's log
                    }
                    String database = name.substring(0, name.lastIndexOf('.'));
                    if (!SERVED_DATABASES.contains(database) || column == null) {
                        throw new SecurityException(name + " is not available to tenant logins (gold.* and silver.* are)");
                    }
                    return new Filter(new EqualTo(column, Literal.create(tenant, DataTypes.StringType)), leaf);
                }
            });
        }
    }
}
